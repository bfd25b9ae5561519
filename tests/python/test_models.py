# The config reader and cost model from Python: KV-cache bytes recomputed by hand from the
# config.json fields, the catalogue, and errors for unreadable configs.
import json
import pathlib

import pytest

import attnkit

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "data" / "configs"


def write(tmp_path, name, cfg):
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


LLAMA = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16,
         "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
         "max_position_embeddings": 131072}


@pytest.mark.parametrize("dtype,nbytes", [("bf16", 2), ("f32", 4), ("fp8", 1)])
@pytest.mark.parametrize("context", [1, 4096, 131072])
def test_kv_cache_bytes_of_a_plain_gqa_model(tmp_path, dtype, nbytes, context):
    p = write(tmp_path, "config.json", LLAMA)
    want = 16 * 2 * 8 * 64 * nbytes * context  # layers · (K and V) · kv heads · head dim
    assert attnkit.kv_cache_bytes(str(p), context=context, dtype=dtype) == want
    assert attnkit.kv_cache_bytes(p, context=context, dtype=dtype, batch=3) == 3 * want


def test_sliding_window_layers_are_capped_at_their_window(tmp_path):
    cfg = dict(LLAMA, model_type="mistral", sliding_window=1000)
    p = write(tmp_path, "config.json", cfg)
    per_token = 16 * 2 * 8 * 64 * 2
    assert attnkit.kv_cache_bytes(p, context=500) == per_token * 500
    assert attnkit.kv_cache_bytes(p, context=131072) == per_token * 1000
    model = attnkit.read_config(p)
    assert model.count("sliding") == 16 and model.num_layers == 16
    assert all(layer["window"] == 1000 for layer in model.layers)


def test_shared_llama_config_and_catalogue():
    path = CONFIGS / "llama-3.2-3b-instruct.json"
    if not path.exists():
        pytest.skip("shared configs not present")
    cfg = json.loads(path.read_text())
    per_token = (cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * cfg["head_dim"] * 2)
    assert attnkit.kv_cache_bytes(str(path)) == per_token * 131072
    names = [e["name"] for e in attnkit.catalogue()]
    assert "llama-3.2-3b" in names
    assert attnkit.kv_cache_bytes("llama-3.2-3b", context=1024) == per_token * 1024


def test_cost_report_and_model_object(tmp_path):
    p = write(tmp_path, "config.json", LLAMA)
    model = attnkit.load_model(str(p))
    assert model.pattern == "F" * 16 and model.hidden_size == 2048
    assert "16 full" in model.summary and "ModelConfig" in repr(model)
    report = attnkit.cost(model, context=2048, batch=2)
    assert report["kv_bytes_total"] == 2 * 16 * 2 * 8 * 64 * 2 * 2048
    assert report["kv_bytes_per_token"] == 16 * 2 * 8 * 64 * 2
    assert report["state_bytes"] == 0 and len(report["layers"]) == 16
    assert model.to_dict()["layers"][0]["num_heads_kv"] == 8
    assert attnkit.model_card_svg(model).lstrip().startswith("<svg")


def test_recurrent_hybrids_report_state(tmp_path):
    report = attnkit.cost("qwen3-next-80b-a3b", context=1000, layers=False)
    assert report["state_bytes"] > 0 and "layers" not in report
    # The state does not grow with the context; the KV cache does.
    longer = attnkit.cost("qwen3-next-80b-a3b", context=2000, layers=False)
    assert longer["state_bytes"] == report["state_bytes"]
    assert longer["kv_bytes_total"] == 2 * report["kv_bytes_total"]


def test_model_errors(tmp_path):
    with pytest.raises(ValueError):
        attnkit.kv_cache_bytes(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError):
        attnkit.read_config(bad)
    with pytest.raises(ValueError, match="dtype|fp4"):
        attnkit.kv_cache_bytes(write(tmp_path, "c.json", LLAMA), dtype="fp4")
    with pytest.raises(ValueError):
        attnkit.kv_cache_bytes(write(tmp_path, "c2.json", LLAMA), context=0)
    with pytest.raises(TypeError, match="model must be"):
        attnkit.kv_cache_bytes(42)


# A held-out real config of a family the reader has no rule for (DeepSeek V4): refused with a
# ValueError naming the fields; with allow_unknown=True, read as an estimate and marked so.
def test_unmodelled_fields_are_refused_unless_allowed():
    path = CONFIGS / "deepseek-v4-flash.json"
    with pytest.raises(ValueError, match="compress_ratios"):
        attnkit.read_config(path)
    with pytest.raises(ValueError, match="compress_ratios"):
        attnkit.load_model(str(path))
    model = attnkit.read_config(path, allow_unknown=True)
    assert model.is_estimate
    assert model.unmodelled[0] == "compress_ratios"
    report = attnkit.cost(model, context=1 << 20)
    assert report["estimate"] is True and "compress_ratios" in report["unmodelled"]
    assert "Estimate: ignores" in attnkit.model_card_svg(model)
    assert attnkit.load_model(str(path), allow_unknown=True).is_estimate
    plain = attnkit.load_model("llama-3.1-8b")
    assert not plain.is_estimate and "estimate" not in attnkit.cost(plain)


def test_read_config_text_rejects_nul_bytes_and_bad_text_config():
    text = json.dumps(LLAMA)
    with pytest.raises(ValueError, match="NUL byte"):
        attnkit.read_config_text(text + "\0{}")
    with pytest.raises(ValueError, match="text_config must be an object"):
        attnkit.read_config_text(json.dumps(dict(LLAMA, text_config=[1])))
    cfg = dict(LLAMA, layer_types=["conv"] * 16)
    with pytest.raises(ValueError, match="layer_types entry 'conv'"):
        attnkit.read_config_text(json.dumps(cfg))
    assert attnkit.read_config_text(json.dumps(cfg), allow_unknown=True).count("mlp") == 16
