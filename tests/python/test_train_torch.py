"""The whole training step of attnkit's trainer (forward, loss, backward, clipping, AdamW with its
schedule) against a PyTorch implementation of the same model, from the same initial weights
(`attnkit train --steps 0` writes them) and the same MQAR batches (`attnkit.mqar_batch`), step by
step (issue 15). The reference runs in float64 with torch.optim.AdamW."""
import json
import math
import subprocess

import attnkit
import numpy as np
import pytest

from test_cli_bad_input import CLI

torch = pytest.importorskip("torch")

CFG = dict(layers=2, hidden=16, heads=2, seqlen=15, batch=4, pairs=2, mqar_vocab=16, lr=1e-2,
           warmup=2, weight_decay=0.1, clip=0.5, min_lr=0.1, seed=7)
STEPS = 5
EPS = 1e-5  # the model's RMSNorm eps


def read_safetensors(path):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = torch.from_numpy(
            np.frombuffer(data[b:end], dtype=np.float32).reshape(e["shape"]).copy()).double()
    return out


def rms_norm(x, w):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + EPS) * w


def rope_half(x):
    """x [B, T, H, d]: rotate-half RoPE, theta 10000, all dims."""
    d = x.shape[-1]
    inv = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = torch.arange(x.shape[1], dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], -1)


def forward_loss(w, inputs, targets):
    h = w["embed"][inputs]  # [B, T, H]
    bsz, t, hid = h.shape
    heads = CFG["heads"]
    dk = hid // heads
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(CFG["layers"]):
        p = f"blocks.{i}."
        x = rms_norm(h, w[p + "attn_norm"])
        q = rope_half((x @ w[p + "attn.w_q"]).view(bsz, t, heads, dk))
        k = rope_half((x @ w[p + "attn.w_k"]).view(bsz, t, heads, dk))
        v = (x @ w[p + "attn.w_v"]).view(bsz, t, heads, dk)
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dk)
        s = s.masked_fill(~mask, float("-inf"))
        o = torch.einsum("bhqk,bkhd->bqhd", torch.softmax(s, -1), v).reshape(bsz, t, hid)
        h = h + o @ w[p + "attn.w_o"]
        x = rms_norm(h, w[p + "mlp_norm"])
        g = x @ w[p + "mlp.w_gate"]
        h = h + (torch.nn.functional.silu(g) * (x @ w[p + "mlp.w_up"])) @ w[p + "mlp.w_down"]
    logits = rms_norm(h, w["final_norm"]) @ w["embed"].T
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             targets.reshape(-1).long(), ignore_index=-1)


def learning_rate(step):
    lr, warmup = CFG["lr"], CFG["warmup"]
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (STEPS - warmup))
    lo = lr * CFG["min_lr"]
    return lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * progress))


def test_training_steps_match_pytorch(tmp_path):
    args = [str(CLI), "train", "--variant", "mha", "--steps", "0", "--out", str(tmp_path / "init"),
            "--json", "--threads", "1"]
    for k in ("layers", "hidden", "heads", "seqlen", "batch", "pairs", "seed"):
        args += [f"--{k}", str(CFG[k])]
    args += ["--mqar-vocab", str(CFG["mqar_vocab"])]
    subprocess.run(args, check=True, capture_output=True)
    w = read_safetensors(tmp_path / "init" / "step-00000000" / "model.safetensors")
    assert "head" not in w and "blocks.1.attn.w_q" in w
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    decay = [p for k, p in params.items() if p.dim() == 2 and k != "embed"]
    rest = [p for k, p in params.items() if not (p.dim() == 2 and k != "embed")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": CFG["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=CFG["lr"], betas=(0.9, 0.95), eps=1e-8)
    ours = attnkit.train(variant="mha", steps=STEPS, layers=CFG["layers"], hidden=CFG["hidden"],
                         heads=CFG["heads"], seqlen=CFG["seqlen"], batch=CFG["batch"],
                         pairs=CFG["pairs"], mqar_vocab=CFG["mqar_vocab"], lr=CFG["lr"],
                         warmup=CFG["warmup"], weight_decay=CFG["weight_decay"], clip=CFG["clip"],
                         min_lr=CFG["min_lr"], seed=CFG["seed"], eval_sequences=4)
    torch_losses = []
    for step in range(STEPS):
        inputs, targets = attnkit.mqar_batch(seqlen=CFG["seqlen"], pairs=CFG["pairs"],
                                             vocab=CFG["mqar_vocab"], seed=CFG["seed"],
                                             first=step * CFG["batch"], batch=CFG["batch"])
        opt.zero_grad()
        loss = forward_loss(params, torch.from_numpy(inputs).long(), torch.from_numpy(targets))
        loss.backward()
        norm = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params.values()))
        if norm > CFG["clip"]:
            for p in params.values():
                p.grad.mul_(CFG["clip"] / norm)
        for group in opt.param_groups:
            group["lr"] = learning_rate(step)
        opt.step()
        torch_losses.append(float(loss))
    np.testing.assert_allclose(ours["losses"], torch_losses, rtol=1e-6)
    assert torch_losses[0] != torch_losses[-1]
