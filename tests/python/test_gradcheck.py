"""torch.autograd.gradcheck of ringattn.torch at tiny sizes (one rank).

gradcheck wants float64; the cpu backend computes in float32, so the op is
checked through float64 -> float32 -> float64 casts with a step and bounds
that fit float32: with eps 1e-3, float32 rounding of outputs of a few units
puts up to ~3e-4 into a finite difference (measured over seeds), hence atol
1e-3. A gradient off by 1% must fail the same check (the control below), so
the bounds are not too loose to catch one.
At several ranks gradcheck would perturb every rank's input at once and read
its own output only, which is not the Jacobian of one rank: the np 2-4 tests
compare gradients with the float64 reference instead (test_torch_op.py).
"""
import sys

import harness

import torch

import ringattn.torch as rt

EPS, ATOL, RTOL = 1e-3, 1e-3, 2e-3
CASES = [
    # (branches, causal, head_offsets, B, N, H, D)
    ([(6, 2), (4, 1)], False, "interleaved", 1, 12, 2, 3),
    ([(6, 2), (4, 1)], True, "interleaved", 2, 12, 2, 3),
    ([(8, 3), (12, 1)], True, "blocked", 1, 12, 3, 2),   # r not dividing w, padded heads
    ([(6, 2)], False, "blocked", 1, 12, 1, 2),           # tokens no branch selects
]


def op(branches, causal, head_offsets):
    attn = rt.DilatedAttention(branches, causal=causal, head_offsets=head_offsets, timeout=30.0)
    return lambda q, k, v: attn(q.float(), k.float(), v.float()).double()


class _OffByOnePercent(torch.autograd.Function):
    """Identity whose gradient is 1% too large."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return 1.01 * g


def test_gradcheck():
    for branches, causal, offsets, b, n, h, d in CASES:
        args = [torch.randn(b, n, h, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]
        assert torch.autograd.gradcheck(op(branches, causal, offsets), args, eps=EPS, atol=ATOL, rtol=RTOL), branches


def test_gradcheck_catches_a_wrong_gradient():
    branches, causal, offsets, b, n, h, d = CASES[1]
    f = op(branches, causal, offsets)
    args = [torch.randn(b, n, h, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    wrong = lambda q, k, v: f(q, k, _OffByOnePercent.apply(v))  # noqa: E731
    assert not torch.autograd.gradcheck(wrong, args, eps=EPS, atol=ATOL, rtol=RTOL, raise_exception=False), \
        "a gradient 1% off passed: the bounds are too loose"


if __name__ == "__main__":
    if harness.SIZE != 1:
        print("test_gradcheck runs on one rank (np 1); the np 2-4 gradients are in test_torch_op.py")
        sys.exit(2)
    sys.exit(harness.run("test_gradcheck", [test_gradcheck, test_gradcheck_catches_a_wrong_gradient]))
