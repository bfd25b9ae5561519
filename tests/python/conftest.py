# pytest set-up for the Python bindings: a fresh random seed per test (printed, so a failure can be
# replayed with ATTNKIT_SEED=<seed>), and a clear skip-free failure if the module is missing.
import os
import random

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("ATTNKIT_SEED", random.SystemRandom().randrange(2**31)))
    print(f"{request.node.name}: seed {seed} (replay with ATTNKIT_SEED={seed})")
    return np.random.default_rng(seed)
