"""ringattn.torch at np 1-4 (mpirun): forward and backward against the float64
SPEC reference (spec_reference.py) on fresh random inputs, `dense` against
torch's scaled_dot_product_attention, mpi4py communicators, what autograd saves,
and bad tensors and runtime errors raised on every rank before any K/V moves.

    mpirun -np 2 python tests/python/test_torch_op.py [test names...]
"""
import math
import sys
import time

import harness
from harness import COMM, RANK, SIZE
from mpi4py import MPI

import torch
import torch.nn.functional as F

import ringattn
import ringattn.torch as rt
from ringattn import _runtime
from spec_reference import TOLERANCES, attention, lse_ratio, rel_l2

TIMEOUT = 30.0  # a peer silent this long fails the call: a missing agreement shows as a slow test, not a hang


def shard(x, rank=RANK, size=SIZE):
    """This rank's tokens of a (B, N, ...) tensor."""
    n = x.shape[1] // size
    return x[:, rank * n:(rank + 1) * n].contiguous()


def inputs(b, n, h, d, dtype, amplitude=1.0):
    """Q, K, V, dO of the whole sequence (the same on every rank), rounded to dtype."""
    q, k, v, do = [torch.randn(b, n, h, d, dtype=torch.float64) for _ in range(4)]
    return [(amplitude * x).to(dtype) for x in (q, k, v)] + [do.to(dtype)]


def check_against_reference(what, branches, causal, head_offsets, b, n, h, d, dtype, scale=None, comm=None,
                            amplitude=1.0, o_bound=None, grads=True, deterministic=True):
    """Forward (O, LSE) and backward (dQ, dK, dV) of this rank's shard against the reference.

    grads=False checks the gradients for finiteness only: at logits of ~1e4 the
    softmax is one-hot to float64 and the true dQ, dK are ~1e-50, so any float32
    rounding of Delta = <dO, O> is an unbounded relative error."""
    rank, size = (RANK, SIZE) if comm is None else (comm.Get_rank(), comm.Get_size())
    q, k, v, do = inputs(b, n, h, d, dtype, amplitude)
    named = branches if isinstance(branches, str) else None
    ref_branches = ringattn.named_branches(named, n) if named else branches
    qr, kr, vr = (x.double().requires_grad_() for x in (q, k, v))
    o_ref, lse_ref = attention(qr, kr, vr, ref_branches, causal, head_offsets, scale)
    o_ref.backward(do.double())
    attn = rt.DilatedAttention(branches, causal=causal, head_offsets=head_offsets, scale=scale, dtype=dtype,
                               comm=comm, timeout=TIMEOUT, deterministic=deterministic)
    qs, ks, vs = (shard(x, rank, size).requires_grad_() for x in (q, k, v))
    o, lse = attn(qs, ks, vs, return_lse=True)
    assert o.dtype == dtype and o.shape == qs.shape, "%s: O is %s %s" % (what, o.dtype, tuple(o.shape))
    assert lse.dtype == torch.float32 and lse.shape == qs.shape[:3], "%s: LSE is %s %s" % (what, lse.dtype, tuple(lse.shape))
    o.backward(shard(do, rank, size))
    o_tol, lse_tol = TOLERANCES[dtype]
    o_tol = o_bound or o_tol
    errs = {
        "O": (rel_l2(o, shard(o_ref, rank, size)), o_tol),
        "LSE": (lse_ratio(lse, shard(lse_ref, rank, size), lse_tol), 1.0),
        "dQ": (rel_l2(qs.grad, shard(qr.grad, rank, size)), 2 * o_tol),
        "dK": (rel_l2(ks.grad, shard(kr.grad, rank, size)), 2 * o_tol),
        "dV": (rel_l2(vs.grad, shard(vr.grad, rank, size)), 2 * o_tol),
    }
    for t in (o, qs.grad, ks.grad, vs.grad):
        assert torch.isfinite(t).all(), "%s: a non-finite value in an output" % what
    if not grads:
        errs = {k: e for k, e in errs.items() if k in ("O", "LSE")}
    bad = {k: e for k, e in errs.items() if not (e[0] <= e[1])}  # NaN fails here too
    assert not bad, "%s: rank %d: over the bound (error, bound): %s" % (what, rank, bad)
    return errs


# (name, branches, causal, head_offsets, B, N, H, D): N divisible by 1, 2 and 4; shards cut segments.
SPEC_CASES = [
    ("r not dividing w, short last segment, keys of two branches", [(20, 3), (8, 1)], False, "interleaved", 2, 48, 3, 8),
    ("the same, causal, blocked offsets (H=3 padded)", [(20, 3), (8, 1)], True, "blocked", 2, 48, 3, 8),
    ("geometric-like: segments span ranks, causal", [(16, 1), (32, 2), (64, 4)], True, "interleaved", 1, 64, 4, 8),
    ("one dilated branch: unselected tokens (O 0, LSE -inf)", [(16, 2)], False, "interleaved", 1, 32, 1, 4),
    ("named longnet-paper", "longnet-paper", True, "interleaved", 1, 32, 2, 4),
]


def test_forward_backward_f32():
    for name, branches, causal, offsets, b, n, h, d in SPEC_CASES:
        check_against_reference(name, branches, causal, offsets, b, n, h, d, torch.float32)


def test_nondeterministic_option():
    # deterministic=False is the same math (on cuda dQ is summed with atomics; the
    # cpu backend is always deterministic): the same bounds, and agreed by the ranks.
    name, branches, causal, offsets, b, n, h, d = SPEC_CASES[2]
    check_against_reference(name + ", deterministic=False", branches, causal, offsets, b, n, h, d, torch.float32,
                            deterministic=False)


def test_forward_backward_f16_bf16():
    for dtype in (torch.float16, torch.bfloat16):
        for name, branches, causal, offsets, b, n, h, d in SPEC_CASES[:3]:
            check_against_reference("%s (%s)" % (name, dtype), branches, causal, offsets, b, n, h, d, dtype)


def test_scale_and_large_logits():
    check_against_reference("scale 0.3", [(16, 2), (32, 1)], True, "interleaved", 1, 32, 2, 8, torch.float32, scale=0.3)
    # Logits of ~1e4 (inputs x100): no NaN or Inf; O within the README's f32 bound at 1e4 logits.
    check_against_reference("logits ~1e4", [(16, 2), (32, 1)], False, "interleaved", 1, 32, 2, 8, torch.float32,
                            amplitude=100.0, o_bound=2e-4, grads=False)
    check_against_reference("logits ~1e4 bf16", [(16, 2), (32, 1)], True, "interleaved", 1, 32, 2, 8, torch.bfloat16,
                            amplitude=100.0, grads=False)


def test_keys_of_two_branches_count_twice():
    # The reference must tell SPEC's multiset from a set union by far more
    # than the bound, or the cases above could not catch a runtime that
    # counted such keys once.
    q, k, v, _ = inputs(1, 48, 3, 8, torch.float32)
    o_multi, _ = attention(q, k, v, [(20, 3), (8, 1)])
    o_set, _ = attention(q, k, v, [(20, 3), (8, 1)], multiset=False)
    assert rel_l2(o_set, o_multi) > 100 * TOLERANCES[torch.float32][0], rel_l2(o_set, o_multi)
    o = rt.dilated_attention(shard(q), shard(k), shard(v), [(20, 3), (8, 1)], timeout=TIMEOUT)
    assert rel_l2(o, shard(o_multi)) <= TOLERANCES[torch.float32][0]
    assert rel_l2(o, shard(o_set)) > 10 * TOLERANCES[torch.float32][0]


def test_dense_vs_sdpa():
    b, n, h, d = 2, 32, 2, 8
    for causal in (False, True):
        q, k, v, do = inputs(b, n, h, d, torch.float32)
        # SDPA in float64 on the whole sequence, (B, H, N, D).
        qr, kr, vr = (x.double().transpose(1, 2).requires_grad_() for x in (q, k, v))
        o_ref = F.scaled_dot_product_attention(qr, kr, vr, is_causal=causal)
        o_ref.backward(do.double().transpose(1, 2))
        qs, ks, vs = (shard(x).requires_grad_() for x in (q, k, v))
        o = rt.dilated_attention(qs, ks, vs, "dense", causal=causal, timeout=TIMEOUT)
        o.backward(shard(do))
        tol = TOLERANCES[torch.float32][0]
        for what, x, ref in (("O", o, o_ref), ("dQ", qs.grad, qr.grad), ("dK", ks.grad, kr.grad), ("dV", vs.grad, vr.grad)):
            e = rel_l2(x, shard(ref.transpose(1, 2)))
            bound = tol if what == "O" else 2 * tol
            assert e <= bound, "dense causal=%s: %s error %.3g > %.3g" % (causal, what, e, bound)


def test_mpi4py_communicator():
    # Two groups (even and odd ranks) each run their own sequence on their
    # sub-communicator; with one rank, a duplicate of COMM_WORLD.
    sub = COMM.Split(RANK % 2, RANK) if SIZE > 1 else COMM.Dup()
    try:
        torch.manual_seed(torch.initial_seed() + RANK % 2)  # the same within a group, different between groups
        check_against_reference("mpi4py sub-communicator of %d" % sub.Get_size(), [(8, 1), (16, 2)], True,
                                "interleaved", 1, 16, 2, 4, torch.float32, comm=sub)
        # A communicator that is not one: refused before any communication.
        try:
            rt.dilated_attention(*inputs(1, 8, 1, 4, torch.float32)[:3], [(8, 1)], comm="world")
        except TypeError as e:
            assert "comm is a str" in str(e) and "mpi4py" in str(e), str(e)
        else:
            raise AssertionError("comm='world' was accepted")
    finally:
        ringattn.clear_cache()
        sub.Free()


def test_saved_for_backward():
    b, n, h, d = 1, 16, 2, 4
    q, k, v, do = (shard(x) for x in inputs(b, n, h, d, torch.float32))
    attn = rt.DilatedAttention([(8, 1), (16, 2)], timeout=TIMEOUT)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    q.requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        o, lse = attn(q, k, v, return_lse=True)
    # Q, K, V (the inputs, not copies) and O and LSE: nothing else.
    assert len(saved) == 5, "saved %d tensors: %s" % (len(saved), [tuple(t.shape) for t in saved])
    ptrs = {t.data_ptr() for t in saved}
    assert ptrs == {q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), lse.data_ptr()}, "saved other tensors"
    o.backward(do)
    assert q.grad is not None and k.grad is None, "gradients of inputs that do not require them"
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.no_grad():
            o2 = attn(q, k, v)
        o3 = attn(q.detach(), k, v)  # nothing requires grad
    assert not saved and not o2.requires_grad and not o3.requires_grad, "saved %d tensors without grad" % len(saved)
    assert torch.equal(o2, o.detach()) and torch.equal(o3, o2), "the same inputs gave other bits"
    try:
        lse.sum().backward()
    except RuntimeError:
        pass  # LSE is not differentiable
    else:
        raise AssertionError("LSE let a gradient through")


def test_context_cached():
    q, k, v, _ = (shard(x) for x in inputs(1, 16, 2, 4, torch.float32))
    attn = rt.DilatedAttention([(8, 1), (16, 2)], timeout=TIMEOUT)
    attn(q, k, v)
    contexts = dict(_runtime._contexts)
    ctx = [c for key, c in contexts.items() if key[1][0] == ((8, 1), (16, 2))]
    assert len(ctx) == 1, "contexts of this config: %d" % len(ctx)
    before = ctx[0].stats()["forwards"]
    o1 = attn(q, k, v)
    o2 = rt.dilated_attention(q, k, v, [(8, 1), (16, 2)], timeout=TIMEOUT)  # the same config: the same context
    assert dict(_runtime._contexts) == contexts, "a new context for the same config"
    assert ctx[0].stats()["forwards"] == before + 2
    assert torch.equal(o1, o2), "module and function differ"


def expect_error(what, call, kinds, words):
    """call() must raise one of `kinds` whose message has every word, quickly (no peer waited on)."""
    t0 = time.monotonic()
    try:
        call()
    except kinds as e:
        msg = str(e)
        missing = [w for w in words if w not in msg]
        assert not missing, "%s: message %r lacks %s" % (what, msg, missing)
    except Exception as e:
        raise AssertionError("%s: raised %s (%s), expected %s" % (what, type(e).__name__, e, kinds))
    else:
        raise AssertionError("%s: no error" % what)
    took = time.monotonic() - t0
    assert took < TIMEOUT / 3, "%s: took %.1f s (a rank waited for a peer?)" % (what, took)


def forwards_so_far():
    return {k: c.stats()["forwards"] for k, c in _runtime._contexts.items()}


def test_bad_tensors_every_rank():
    b, n, h, d = 1, 8 * SIZE, 2, 4
    q, k, v = (torch.randn(b, n // SIZE, h, d) for _ in range(3))
    attn = rt.DilatedAttention([(8, 1)], timeout=TIMEOUT)
    attn(q, k, v)  # the context exists: bad calls must not reach it
    before = forwards_so_far()
    cases = [
        ("float64 q", lambda: attn(q.double(), k, v), TypeError, ["q", "float64", "allowed", "float32", "bfloat16"]),
        ("int k", lambda: attn(q, k.int(), v), TypeError, ["k", "int32", "allowed"]),
        ("k float16, q float32", lambda: attn(q, k.half(), v.half()), TypeError, ["k", "float16", "q has torch.float32"]),
        ("non-contiguous v", lambda: attn(q, k, v.transpose(1, 2).contiguous().transpose(1, 2)), ValueError,
         ["v", "not contiguous", "strides", "allowed"]),
        ("3-D q", lambda: attn(q[0], k[0], v[0]), ValueError, ["q", "4 dimensions", "(B, L, H, D)"]),
        ("k shape", lambda: attn(q, k[:, :-1].contiguous(), v), ValueError, ["k", "shape", "q has"]),
        ("empty", lambda: attn(q[:, :0], k[:, :0], v[:, :0]), ValueError, ["q", "at least 1"]),
        ("meta device", lambda: attn(q.to("meta"), k.to("meta"), v.to("meta")), ValueError, ["q", "meta", "CPU tensors"]),
        ("not a tensor", lambda: attn(q.tolist(), k, v), TypeError, ["q", "list", "torch.Tensor"]),
        ("sparse", lambda: attn(q, k.to_sparse(), v), TypeError, ["k", "layout", "strided"]),
        ("module dtype", lambda: rt.DilatedAttention([(8, 1)], dtype=torch.bfloat16, timeout=TIMEOUT)(q, k, v), TypeError,
         ["q", "float32", "bfloat16"]),
    ]
    for what, call, kind, words in cases:
        expect_error(what, call, kind, words)
    assert forwards_so_far() == before, "a bad call reached a context"
    # Bad options: refused where the module is made (no communication at all).
    expect_error("branches", lambda: rt.DilatedAttention([(8,)]), TypeError, ["branches", "(w, r)"])
    expect_error("branch name", lambda: rt.DilatedAttention("longnet5"), ValueError, ["longnet5", "longnet4", "dense"])
    expect_error("head offsets", lambda: rt.DilatedAttention([(8, 1)], head_offsets="x"), ValueError, ["interleaved"])
    expect_error("backend", lambda: rt.DilatedAttention([(8, 1)], backend="gpu"), ValueError, ["gpu", "cuda"])
    expect_error("deterministic", lambda: rt.DilatedAttention([(8, 1)], deterministic="no"), TypeError,
                 ["deterministic", "True, False"])


def test_bad_tensor_on_one_rank():
    # Only the last rank passes a bad tensor: every rank raises, quickly,
    # naming that rank; the others' calls never start the ring.
    if SIZE == 1:
        return
    q, k, v = (torch.randn(1, 8, 2, 4) for _ in range(3))
    attn = rt.DilatedAttention([(16, 2)], timeout=TIMEOUT)
    attn(q, k, v)
    before = forwards_so_far()
    bad_k = k.double() if RANK == SIZE - 1 else k
    expect_error("bad k on rank %d" % (SIZE - 1), lambda: attn(q, bad_k, v), (TypeError, ValueError),
                 ["rank %d:" % (SIZE - 1), "k has dtype torch.float64", "allowed"])
    assert forwards_so_far() == before, "a bad call reached a context"


def test_runtime_errors_on_every_rank():
    q, k, v = (torch.randn(1, 8, 2, 4) for _ in range(3))
    # The runtime's own check (r > w), raised with its message on every rank.
    expect_error("r > w", lambda: rt.dilated_attention(q, k, v, [(4, 8)], timeout=TIMEOUT), ringattn.RingattnValueError,
                 ["branch 0 (w=4, r=8)", "dilation r must be <= w"])
    if SIZE > 1:
        # Ranks that disagree on the config: kMismatch on all of them.
        expect_error("causal on rank 0 only", lambda: rt.dilated_attention(q, k, v, [(8, 1)], causal=RANK == 0,
                                                                           timeout=TIMEOUT),
                     ringattn.RingattnValueError, ["ranks disagree on the configuration"])
    # The cuda backend asked for CPU tensors: refused locally and agreed.
    expect_error("cuda backend, CPU tensors", lambda: rt.dilated_attention(q.half(), k.half(), v.half(), [(8, 1)],
                                                                           backend="cuda", timeout=TIMEOUT),
                 ValueError, ["q is on device cpu", "CUDA tensors"])


TESTS = [test_forward_backward_f32, test_nondeterministic_option, test_forward_backward_f16_bf16, test_scale_and_large_logits,
         test_keys_of_two_branches_count_twice, test_dense_vs_sdpa, test_mpi4py_communicator, test_saved_for_backward,
         test_context_cached, test_bad_tensors_every_rank, test_bad_tensor_on_one_rank, test_runtime_errors_on_every_rank]

if __name__ == "__main__":
    sys.exit(harness.run("test_torch_op", TESTS, only=sys.argv[1:]))
