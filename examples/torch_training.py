# Training with attnkit from PyTorch: a tiny causal attention layer (projections in torch,
# attention in attnkit.torch) learns to imitate a fixed "teacher" layer of the same shape.
# Gradients flow through attnkit's backward kernels via torch.autograd; torch.optim does the rest.
#
#   PYTHONPATH=build/python /usr/bin/python3 examples/torch_training.py
import torch

import attnkit


class TinyAttention(torch.nn.Module):
    def __init__(self, hidden=32, heads=4, kernel="linear"):
        super().__init__()
        self.heads, self.head_dim, self.kernel = heads, hidden // heads, kernel
        self.qkv = torch.nn.Linear(hidden, 3 * hidden, bias=False)
        self.proj = torch.nn.Linear(hidden, hidden, bias=False)

    def forward(self, x):  # x [batch, tokens, hidden]
        b, t, _ = x.shape
        # [batch, tokens, 3, heads, head_dim] -> q, k, v in "bshd" layout: views, no copies
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).unbind(2)
        if self.kernel == "softmax":
            o = attnkit.torch.attention(q, k, v, causal=True, window=16, layout="bshd")
        else:
            o = attnkit.torch.linear_attention(q, k, v, feature_map="elu+1", causal=True,
                                               chunk_size=16, layout="bshd")
        return self.proj(o.reshape(b, t, -1))


def train(steps=30, kernel="linear", seed=0):
    torch.manual_seed(seed)
    teacher, student = TinyAttention(kernel=kernel), TinyAttention(kernel=kernel)
    x = torch.randn(4, 40, 32)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(student(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


if __name__ == "__main__":
    kernels = ["linear"] + (["softmax"] if hasattr(attnkit, "attention_backward") else [])
    for kernel in kernels:
        losses = train(kernel=kernel)
        print(f"{kernel} attention: loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} steps")
        if not losses[-1] < 0.5 * losses[0]:
            raise SystemExit(f"{kernel}: the loss did not decrease enough")
