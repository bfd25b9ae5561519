"""attnkit.train / attnkit.evaluate_checkpoint: the trainer of `attnkit train` from Python."""
import math

import attnkit
import pytest

TINY = dict(layers=1, hidden=16, heads=2, seqlen=16, batch=4, pairs=2, mqar_vocab=16,
            eval_sequences=8)


def test_train_mqar_returns_evaluations_and_a_checkpoint(tmp_path):
    r = attnkit.train(variant="mha", steps=4, eval_every=2, out=str(tmp_path / "run"), **TINY)
    assert [e["step"] for e in r["evals"]] == [2, 4]
    assert len(r["losses"]) == 4 and all(math.isfinite(x) for x in r["losses"])
    assert r["evals"][-1]["tokens"] == 16 and 0 <= r["evals"][-1]["accuracy"] <= 1
    assert r["params"] > 0 and r["tokens_per_s"] > 0
    e = attnkit.evaluate_checkpoint(str(tmp_path / "run"))
    assert e["loss"] == r["evals"][-1]["loss"]
    # Same seed, same result.
    again = attnkit.train(variant="mha", steps=4, eval_every=2, **TINY)
    assert again["losses"] == r["losses"]


def test_train_text_reports_bits_per_byte(tmp_path):
    f = tmp_path / "fox.txt"
    f.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    r = attnkit.train(task="text", text=str(f), variant="gated_deltanet", layers=1, hidden=16,
                      heads=2, seqlen=16, batch=4, steps=3)
    e = r["evals"][-1]
    assert e["bits_per_byte"] == pytest.approx(e["loss"] / math.log(2))
    assert len(e["loss_by_position"]) == 16


def test_train_bad_input_raises_value_error(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        attnkit.train(variant="nosuch", **TINY)
    with pytest.raises(ValueError, match="empty"):
        (tmp_path / "empty.txt").write_text("")
        attnkit.train(task="text", text=str(tmp_path / "empty.txt"), **TINY)
    with pytest.raises(ValueError, match="not a checkpoint"):
        attnkit.evaluate_checkpoint(str(tmp_path / "nothing"))
