# pytest set-up for the Python bindings: every test's random inputs come from the `rng` fixture,
# seeded with a fixed default so runs are reproducible. ATTNKIT_TEST_SEED=N replays seed N, and
# ATTNKIT_TEST_SEED=random draws a fresh seed per test (scripts/test.sh has one job that does).
# The seed is printed, so pytest shows it beside any failure.
import os
import random
import zlib

import numpy as np
import pytest

DEFAULT_SEED = 20261208


def _base_seed():
    s = os.environ.get("ATTNKIT_TEST_SEED", "")
    if s == "":
        return DEFAULT_SEED
    if s == "random":
        return None
    try:
        v = int(s)
    except ValueError:
        raise pytest.UsageError(f"ATTNKIT_TEST_SEED must be a non-negative integer or 'random', got {s!r}")
    if v < 0:
        raise pytest.UsageError(f"ATTNKIT_TEST_SEED must be a non-negative integer or 'random', got {s!r}")
    return v


@pytest.fixture
def rng(request):
    base = _base_seed()
    # Each test gets its own stream (the base seed mixed with the test's name), so one test's
    # inputs do not change when another test is added or skipped.
    seed = random.SystemRandom().randrange(2**63) if base is None else base
    stream = zlib.crc32(request.node.nodeid.encode())
    print(f"{request.node.nodeid}: seed {seed} (replay with ATTNKIT_TEST_SEED={seed})")
    return np.random.default_rng([seed, stream])
