"""ringattn.torch on the GPU (cuda backend, nccl transport), np 1 or more under
mpirun: rank p uses GPU p mod the GPUs it sees (several ranks on one GPU need
tests/gpu/nccl_hostid.sh). Fresh random inputs (harness.py), the whole
sequence drawn on every rank, each rank checks its shard:

- forward and backward, bf16 and f16, D 128 and 64, causal and not, both head
  offset rules, shards that cut segments: O, LSE and dQ/dK/dV against the
  float64 SPEC reference (spec_reference.py, on the CPU) within SPEC's bounds;
- `dense` against torch's scaled_dot_product_attention (flash, bf16) on the GPU;
- the module inside torch.compile on the GPU: the loss and the gradients equal
  the eager run's (a graph break at the op is allowed);
- nothing non-finite anywhere: before each call, NaN tensors of the shapes and
  dtypes the op is about to allocate (and a large one) are made and freed, so
  its outputs most likely get NaN memory and an element the kernels do not
  write shows (best effort: the caching allocator may pick another free block
  of the same size; the runtime's own tests poison their outputs exactly).

    mpirun -np 2 python tests/python/gpu_torch_op.py
"""
import os
import sys

import harness
from harness import RANK, SIZE

import torch
import torch.nn.functional as F

import ringattn
import ringattn.torch as rt
from spec_reference import TOLERANCES, attention, lse_ratio, rel_l2

TIMEOUT = 60.0
# RINGATTN_GPU_TEST_ON_CPU=1 runs the same checks on the cpu backend (a dry run of this script where there is no GPU).
ON_CPU = os.environ.get("RINGATTN_GPU_TEST_ON_CPU") == "1"
DEV = torch.device("cpu") if ON_CPU else torch.device("cuda", RANK % max(1, torch.cuda.device_count()))


def shard(x):
    n = x.shape[1] // SIZE
    return x[:, RANK * n:(RANK + 1) * n].contiguous()


def poison(*like):
    """NaN in the memory the op's next allocations get: tensors of exactly the
    shapes and dtypes it allocates, made in its order and freed (the caching
    allocator hands an exact fit back first), and a large NaN block for the
    rest. `like`: (shape, dtype) pairs."""
    if ON_CPU:
        return
    torch.cuda.synchronize(DEV)
    held = [torch.full((64 << 20,), float("nan"), dtype=torch.float32, device=DEV)]
    held += [torch.full(shape, float("nan"), dtype=dtype, device=DEV) for shape, dtype in like]
    torch.cuda.synchronize(DEV)
    del held


def check(what, branches, causal, head_offsets, b, n, h, d, dtype):
    q, k, v, do = [torch.randn(b, n, h, d, dtype=torch.float64).to(dtype) for _ in range(4)]
    ref_branches = ringattn.named_branches(branches, n) if isinstance(branches, str) else branches
    qr, kr, vr = (x.double().requires_grad_() for x in (q, k, v))
    o_ref, lse_ref = attention(qr, kr, vr, ref_branches, causal, head_offsets)
    o_ref.backward(do.double())
    attn = rt.DilatedAttention(branches, causal=causal, head_offsets=head_offsets, timeout=TIMEOUT)
    qs, ks, vs = (shard(x).to(DEV).requires_grad_() for x in (q, k, v))
    dos = shard(do).to(DEV)
    poison((qs.shape, dtype), (qs.shape[:3], torch.float32))  # O, LSE
    o, lse = attn(qs, ks, vs, return_lse=True)
    poison(*[(qs.shape, dtype)] * 3)  # dQ, dK, dV
    o.backward(dos)
    if not ON_CPU:
        torch.cuda.synchronize(DEV)
    assert o.device == DEV and o.dtype == dtype and o.shape == qs.shape, "%s: O is %s %s on %s" % (
        what, o.dtype, tuple(o.shape), o.device)
    for name, t in (("O", o), ("LSE", lse), ("dQ", qs.grad), ("dK", ks.grad), ("dV", vs.grad)):
        assert t is not None and torch.isfinite(t).all(), "%s: rank %d: %s missing or not finite" % (what, RANK, name)
    o_tol, lse_tol = TOLERANCES[dtype]
    errs = {
        "O": (rel_l2(o.cpu(), shard(o_ref)), o_tol),
        "LSE": (lse_ratio(lse.cpu(), shard(lse_ref), lse_tol), 1.0),
        "dQ": (rel_l2(qs.grad.cpu(), shard(qr.grad)), 2 * o_tol),
        "dK": (rel_l2(ks.grad.cpu(), shard(kr.grad)), 2 * o_tol),
        "dV": (rel_l2(vs.grad.cpu(), shard(vr.grad)), 2 * o_tol),
    }
    bad = {k: e for k, e in errs.items() if not (e[0] <= e[1])}  # NaN fails here too
    assert not bad, "%s: rank %d: over the bound (error, bound): %s" % (what, RANK, bad)
    harness.say("    %s: %s" % (what, " ".join("%s %.2e" % (k, e[0]) for k, e in errs.items())))


def test_spec_cases_bf16():
    for d in (128, 64):
        check("bf16 D=%d" % d, [(256, 1), (512, 2), (1024, 4)], False, "interleaved", 1, 2048, 4, d, torch.bfloat16)
    check("bf16 causal blocked", [(512, 1), (1024, 4), (2048, 8)], True, "blocked", 1, 2048, 8, 128, torch.bfloat16)


def test_spec_cases_f16():
    check("f16 causal, r not dividing w", [(384, 3), (1024, 1)], True, "interleaved", 2, 1536, 4, 128, torch.float16)
    check("f16 D=64 longnet4", "longnet4", False, "interleaved", 1, 4096, 4, 64, torch.float16)


def test_dense_vs_sdpa():
    b, n, h, d = 1, 2048, 4, 128
    q, k, v = [torch.randn(b, n, h, d, dtype=torch.bfloat16, device=DEV) for _ in range(3)]
    for causal in (False, True):
        want = F.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), is_causal=causal).transpose(1, 2)
        got = rt.dilated_attention(shard(q), shard(k), shard(v), "dense", causal=causal, timeout=TIMEOUT)
        err = rel_l2(got.double().cpu(), shard(want).double().cpu())
        assert err <= TOLERANCES[torch.bfloat16][0], "dense causal=%s: rel L2 %.3e against SDPA" % (causal, err)


class Model(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, d, device=DEV, dtype=torch.bfloat16)
        self.attn = rt.DilatedAttention(branches=[(256, 1), (512, 2)], causal=True, timeout=TIMEOUT)

    def forward(self, x):
        y = self.lin(x)
        return (self.attn(y, y, y).float() * y.float()).sum()


def test_compiled_matches_eager():
    model = Model(128)
    x = torch.randn(1, 1024 // SIZE, 2, 128, device=DEV, dtype=torch.bfloat16, requires_grad=True)
    loss = model(x)
    loss.backward()
    want = [x.grad.clone()] + [p.grad.clone() for p in model.parameters()]
    x.grad = None
    model.zero_grad(set_to_none=True)
    torch._dynamo.reset()
    loss_c = torch.compile(model)(x)
    loss_c.backward()
    got = [x.grad] + [p.grad for p in model.parameters()]
    assert torch.isfinite(loss_c), "compiled loss %s" % loss_c.item()
    # The same kernels on the same inputs; compiled GEMMs may round differently.
    assert torch.allclose(loss_c, loss, rtol=2e-2, atol=1e-2), "loss %r compiled, %r eager" % (loss_c.item(), loss.item())
    for i, (g, w) in enumerate(zip(got, want)):
        assert g is not None and torch.isfinite(g).all(), "gradient %d missing or not finite" % i
        err = rel_l2(g.double().cpu(), w.double().cpu())
        assert err <= 2e-2, "gradient %d: rel L2 %.3e compiled vs eager" % (i, err)


if __name__ == "__main__":
    if not ON_CPU:
        if not torch.cuda.is_available():
            print("gpu_torch_op: no CUDA device (RINGATTN_GPU_TEST_ON_CPU=1 runs it on the cpu backend)")
            sys.exit(1)
        torch.cuda.set_device(DEV)
    sys.exit(harness.run("gpu_torch_op", [test_spec_cases_bf16, test_spec_cases_f16, test_dense_vs_sdpa,
                                          test_compiled_matches_eager], sys.argv[1:] or None))
