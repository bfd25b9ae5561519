"""The CLI refuses bad arguments with one line naming the flag and exit status 2, quickly and
before any measurement (issue 13). Each case hung, allocated gigabytes, saturated or printed an
unhelpful message before its fix."""
import os
import subprocess
from pathlib import Path

import attnkit
import pytest


def find_cli():
    """The attnkit executable of the build tree this module was loaded from."""
    for parent in Path(attnkit.__file__).resolve().parents:
        candidate = parent / "attnkit"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("no attnkit executable above " + attnkit.__file__)


CLI = find_cli()

# (arguments, text the one error line must contain)
REFUSED = [
    ("bench dense --seqlen 1099511627776", "needs about"),  # hung in MaskDensity
    ("bench dense --seqlen 0", "--seqlen"),  # measured ceilings first, multi-line error
    ("bench dense --mask window:99999999999999999999", "--mask"),  # saturated
    ("bench dense --mask window:12x", "--mask"),
    ("bench dense --heads 1m --seqlen 1m", "needs about"),
    ("stack --layers 99999999999999999999*gqa", "--layers"),  # "error: stoll"
    ("stack --layers gqa,,mla", "--layers"),  # empty item dropped
    ("stack --layers gqa,", "--layers"),
    ("stack --hidden 1m --layers 8*gqa", "needs about"),
    ("stack --hidden -5", "--hidden"),
    ("mask longformer --globals 1,,2", "--globals"),
    ("mask causal --seed -1", "--seed"),
    ("probe --seed -1", "--seed"),
    ("bench sparse --seed -1", "--seed"),
    ("bench sparse --mla-prefill 0", "--mla-prefill"),  # checked before the decode run
    ("bench sparse --mla-head-divisor 0", "--mla-head-divisor"),
    ("bench sparse --mla-decode 8k,,32k", "--mla-decode"),
    ("stack --seed -1", "--seed"),
    ("mask causal --ascii-max -1", "--ascii-max"),
    ("mask causal --seqlen 99999999999999999999", "--seqlen"),
    ("mask causal --seqlen 1x", "--seqlen"),
    ("probe --seqlen 1g", "seqlen"),  # no bound: ran for ever
    ("probe --head-dim 1m", "head_dim"),
    ("compare --context 32k,,1m llama3-8b", "--context"),
    ("kv --config /dev/zero", "larger than"),  # read without limit
]

# Accepted, but hung or allocated gigabytes before the fix: must finish in seconds.
BOUNDED = [
    "mask longformer --seqlen 32 --dilated-window 100000000",
    "mask dsa --seqlen 32 --top-k 100000000",
    "mask bigbird --seqlen 32 --random-blocks 100000000",
]


def run(args, timeout=60):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([str(CLI)] + args.split(), capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=os.environ.get("TMPDIR", "/tmp"))


@pytest.mark.parametrize("args,needle", REFUSED)
def test_refused_in_one_line(args, needle):
    r = run(args)
    assert r.returncode == 2, (args, r.stdout[-500:], r.stderr[-500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, (args, r.stderr)
    assert lines[0].startswith("attnkit ") and "error:" in lines[0], lines[0]
    assert needle in lines[0], (args, lines[0])
    assert "Measuring" not in r.stdout and "ceilings" not in r.stdout, r.stdout


@pytest.mark.parametrize("args", BOUNDED)
def test_huge_parameters_are_bounded(args):
    r = run(args + " --json", timeout=30)
    assert r.returncode == 0, (args, r.stderr)
    assert '"density"' in r.stdout
