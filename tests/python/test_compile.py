"""ringattn.torch inside torch.compile (one rank, cpu backend): a graph break
at the op is allowed, a different result is not. A small model (a linear
layer feeding the op) is run eagerly and compiled on the same inputs; the
loss and the gradients of the input and of the weights must agree.
"""
import sys

import harness

import torch

import ringattn.torch as rt


class Model(torch.nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.lin = torch.nn.Linear(16, 16)
        self.attn = rt.DilatedAttention(branches=[(64, 1), (128, 2)], causal=causal, backend="cpu")

    def forward(self, x):
        y = self.lin(x)
        return (self.attn(y, y, y) * y).sum()


def compiled_matches_eager(causal):
    model = Model(causal)
    x = torch.randn(1, 256, 2, 16, requires_grad=True)
    loss = model(x)
    loss.backward()
    want = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad(set_to_none=True)
    compiled = torch.compile(model)
    loss_c = compiled(x)
    loss_c.backward()
    got = [x.grad] + [p.grad for p in model.parameters()]
    assert torch.isfinite(loss_c), "compiled loss %s" % loss_c.item()
    assert torch.allclose(loss_c, loss, rtol=1e-5, atol=1e-5), "loss %r compiled, %r eager" % (loss_c.item(), loss.item())
    for i, (g, w) in enumerate(zip(got, want)):
        assert g is not None and torch.isfinite(g).all(), "gradient %d missing or not finite" % i
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-5), "gradient %d: max difference %g" % (i, (g - w).abs().max().item())


def test_compiled_matches_eager():
    compiled_matches_eager(False)


def test_compiled_matches_eager_causal():
    torch._dynamo.reset()
    compiled_matches_eager(True)


if __name__ == "__main__":
    sys.exit(harness.run("test_compile", [test_compiled_matches_eager, test_compiled_matches_eager_causal]))
