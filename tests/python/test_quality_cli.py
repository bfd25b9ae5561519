"""`attnkit quality` (issue 15): bad input is refused in one line with exit status 2 before any
training; the smoke grid prints one JSON line per requested variant (hybrid lists included) and a
summary line."""
import json

import pytest

from test_cli_bad_input import run

REFUSED = [
    ("quality --smoke --variants nosuch", "nosuch"),
    ("quality --smoke --variants mha,3*mha,nosuch", "nosuch"),
    ("quality --smoke --lengths 8", "cannot hold"),
    ("quality --smoke --lengths 16,x", "--lengths"),
    ("quality --full --smoke", "exclude"),
    ("quality --smoke --steps -1", "--steps"),
    ("quality --smoke --text /nonexistent/corpus.txt", "cannot read"),
    ("quality --smoke --text /dev/null", "cannot read"),
    ("quality --smoke --no-text --text notes.txt", "exclude"),
]


@pytest.mark.parametrize("args,needle", REFUSED)
def test_quality_refuses_in_one_line(args, needle):
    r = run(args)
    assert r.returncode == 2, (r.stdout[-500:], r.stderr[-500:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("attnkit quality: error:"), lines[0]
    assert needle in lines[0], lines[0]
    assert r.stdout == "", r.stdout


def test_quality_smoke_json_has_every_variant():
    r = run("quality --smoke --no-text --json --variants mha;swa;gated_deltanet,mha")
    assert r.returncode == 0, r.stderr[-500:]
    lines = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [x["variant"] for x in lines[:-1]] == ["mha", "swa", "gated_deltanet,mha"]
    for x in lines[:-1]:
        assert len(x["mqar_accuracy"]) == len(x["lengths"]) == len(x["context_bytes"])
        assert 0.0 <= x["mqar_accuracy"][0] <= 1.0
        assert "bits_per_byte" not in x
    assert lines[-1]["event"] == "quality_done"
    assert lines[-1]["text_run"] is False
