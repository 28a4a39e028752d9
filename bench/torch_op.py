"""ringattn's PyTorch op on the GPU (run under mpirun -np 1 on a CUDA machine with the
package installed: pip install --no-build-isolation ./python).

1. Correctness: O and dQ/dK/dV of the op (bf16 and f16, causal and not) against
   tests/python/spec_reference.py (SPEC.md in float64 PyTorch, autograd gradients)
   at a small size, relative L2 within SPEC's bounds (gradients: twice O's).
2. Speed, longnet4 64k (H=16, D=128, bf16), forward+backward, CUDA events,
   a time-based warm-up (--warmup-s), then the cases in turn round after round, medians:
   - the op from PyTorch (allocation of O/LSE/dQ/dK/dV included, as a model pays it);
   - the PyTorch recipe written here from LongNet's description: per branch, gather the
     dilated rows of every segment (heads with the same offset share them), one
     flash SDPA call that also returns LSE, scatter back, merge the branches by
     their LSE. Its merge weights are detached, as torchscale's are, so its
     gradient is NOT exact (ringattn's is); it is a speed anchor only.
3. Overhead of the Python layer over the C++ call, interleaved in this process
   (one op step, one direct call, one op step, ...; medians), so the GPU's
   clock drift between runs does not enter: the op (checks, agreement,
   autograd, allocations) against the binding's Context.forward/backward on
   buffers allocated once (the C++ API's calls, a pybind11 call each).
   The C++ timing of the same op (ringattn bench --op backward) also comes
   from the caller, run in the same call.
Prints useful FLOPs (SPEC: forward + 2.5 x forward) and TFLOP/s.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import spec_reference as ref  # noqa: E402
import ringattn.torch as rt  # noqa: E402

LONGNET4 = [(2048, 1), (4096, 2), (8192, 4), (16384, 8)]


def useful_flops(n, heads, d, branches, batch=1):
    """SPEC "Counting work", non-causal: 4 D |I|^2 per (branch, head, segment)."""
    total = 0
    for w, r in branches:
        for h in range(heads):
            o = h % r
            for s0 in range(0, n, w):
                cnt = len(range(s0 + o, min(s0 + w, n), r))
                total += 4 * d * cnt * cnt
    return total * batch


def warm(fn, seconds):
    """Runs fn until `seconds` have passed (at least once); returns the count. Under its
    power cap a GPU holds its boost clock only for the first ~0.1 s of load, so cases
    timed right after a pause would get a faster clock than the ones after them."""
    t0, n = time.perf_counter(), 0
    while n == 0 or time.perf_counter() - t0 < seconds:
        fn()
        torch.cuda.synchronize()
        n += 1
    return n


def timed_rounds(fns, iters, warmup):
    """Medians (ms, CUDA events) of each fn over `iters` rounds after `warmup`; each round
    runs every fn once, in turn, so drift of the clock weighs on all of them alike."""
    times = [[] for _ in fns]
    for i in range(warmup + iters):
        for j, fn in enumerate(fns):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            if i >= warmup:
                times[j].append(a.elapsed_time(b))
    return [sorted(t)[len(t) // 2] for t in times]


def timed(fn, iters, warmup):
    """The median (ms) of fn alone."""
    return timed_rounds((fn,), iters, warmup)[0]


def flash(q, k, v, causal, scale):
    """(B, H, L, D) -> O (B, H, L, D), LSE (B, H, L) float32 (natural log)."""
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
    return out[0], out[1]


def recipe(q, k, v, branches, causal=False):
    """LongNet's dilated attention in plain PyTorch: gather, flash SDPA per branch, LSE merge (detached weights)."""
    b, n, heads, d = q.shape
    scale = 1.0 / math.sqrt(d)
    outs, lses = [], []
    for w, r in branches:
        assert n % w == 0 and heads % r == 0, "the recipe takes N divisible by w and H by r"
        s = n // w

        def gather(x):  # (B, N, H, D) -> (B*S, H, w/r, D): offset o takes rows o::r of heads o::r
            x5 = x.view(b, s, w, heads, d)
            g = torch.stack([x5[:, :, o::r, o::r] for o in range(r)], dim=3)  # (B, S, w/r, r, H/r, D)
            return g.reshape(b * s, w // r, heads, d).transpose(1, 2)

        o_g, l_g = flash(gather(q), gather(k), gather(v), causal, scale)  # (B*S, H, w/r, D), (B*S, H, w/r)
        o6 = o_g.transpose(1, 2).reshape(b, s, w // r, r, heads // r, d)
        l6 = l_g.transpose(1, 2).reshape(b, s, w // r, r, heads // r)
        o_full = q.new_zeros(b, s, w, heads, d)
        l_full = torch.full((b, s, w, heads), -math.inf, device=q.device, dtype=torch.float32)
        for o in range(r):
            o_full[:, :, o::r, o::r] = o6[:, :, :, o]
            l_full[:, :, o::r, o::r] = l6[:, :, :, o]
        outs.append(o_full.view(b, n, heads, d))
        lses.append(l_full.view(b, n, heads))
    lse = torch.stack(lses).logsumexp(0)
    wts = torch.exp(torch.stack(lses) - lse).detach()  # torchscale's no_grad merge weights
    wts = torch.nan_to_num(wts, nan=0.0)
    return sum(wt[..., None].to(ob.dtype) * ob for wt, ob in zip(wts, outs))


def check_correctness():
    torch.manual_seed(0)
    ok = True
    for dtype in (torch.bfloat16, torch.float16):
        for causal in (False, True):
            b, n, heads, d = 1, 2048, 4, 128
            branches = [(256, 1), (512, 2), (1024, 4)]
            q, k, v, dout = (torch.randn(b, n, heads, d, device="cuda", dtype=dtype) for _ in range(4))
            for x in (q, k, v):
                x.requires_grad_(True)
            o = rt.dilated_attention(q, k, v, branches, causal=causal, backend="cuda", transport="nccl")
            o.backward(dout)
            qd, kd, vd = (x.detach().double().cpu().requires_grad_(True) for x in (q, k, v))
            ro, _ = ref.attention(qd, kd, vd, branches, causal=causal)
            ro.backward(dout.double().cpu())
            bound = ref.TOLERANCES[dtype][0]
            errs = {"O": ref.rel_l2(o.detach().double().cpu(), ro.detach())}
            for name, x, xr in (("dQ", q, qd), ("dK", k, kd), ("dV", v, vd)):
                errs[name] = ref.rel_l2(x.grad.double().cpu(), xr.grad)
            good = all(math.isfinite(e) for e in errs.values()) and errs["O"] <= bound and \
                all(errs[t] <= 2 * bound for t in ("dQ", "dK", "dV"))
            ok = ok and good
            print("correctness %-9s causal=%-5s %s  %s" % (str(dtype).split(".")[-1], causal,
                  " ".join("%s %.2e" % kv for kv in errs.items()), "ok" if good else "WRONG"))
    return ok


def speed(args):
    torch.manual_seed(1)
    b, n, heads, d = 1, args.seq, 16, 128
    dtype = torch.bfloat16
    q, k, v, dout = (torch.randn(b, n, heads, d, device="cuda", dtype=dtype) for _ in range(4))
    for x in (q, k, v):
        x.requires_grad_(True)
    fwd = useful_flops(n, heads, d, LONGNET4, b)
    total = 3.5 * fwd

    def op_step():
        o = rt.dilated_attention(q, k, v, LONGNET4, backend="cuda", transport="nccl")
        o.backward(dout)

    def op_step_atomic():  # deterministic=False: dQ by float32 atomics (reruns may differ in the last bits)
        o = rt.dilated_attention(q, k, v, LONGNET4, backend="cuda", transport="nccl", deterministic=False)
        o.backward(dout)

    def fresh(step):  # as a training step after optimizer.zero_grad() (set_to_none, PyTorch's default)
        def run():
            for x in (q, k, v):
                x.grad = None
            step()
        return run

    def op_forward():
        with torch.no_grad():
            rt.dilated_attention(q, k, v, LONGNET4, backend="cuda", transport="nccl")

    def recipe_step():
        o = recipe(q, k, v, LONGNET4)
        o.backward(dout)

    with torch.no_grad():
        o1 = rt.dilated_attention(q, k, v, LONGNET4, backend="cuda", transport="nccl")
        o2 = recipe(q, k, v, LONGNET4)
        agree = ref.rel_l2(o1.double(), o2.double())
    # Both forward+backward steps start from grads set to None (a training step after
    # zero_grad): with grads kept, autograd adds dQ, dK, dV into them (three extra
    # elementwise kernels on either side).
    # The four cases in turn, round after round (the GPU's clock drifts under its power
    # cap: timed one after another, the first case got the fastest clock), after a warm-up
    # of both kinds of step.
    t0 = time.perf_counter()
    n_warm = warm(fresh(op_step), args.warmup_s / 2) + warm(fresh(recipe_step), args.warmup_s / 2)
    warm_s = time.perf_counter() - t0
    t_op, t_op_nd, t_op_f, t_rec = timed_rounds(
        (fresh(op_step), fresh(op_step_atomic), op_forward, fresh(recipe_step)), args.iters, args.warmup)
    print("# longnet4 %d tokens, H=16, D=128, bf16, 1 GPU (%s); recipe O vs ringattn O: rel L2 %.2e" %
          (n, torch.cuda.get_device_name(), agree))
    print("# timing: medians of %d rounds (the four cases in turn) after %d rounds, and %d steps in %.1f s, of warm-up"
          % (args.iters, args.warmup, n_warm, warm_s))
    print("# %-34s %10s %12s %9s" % ("case", "median_ms", "useful_FLOP", "TFLOP/s"))
    for name, t, f in (("ringattn op forward (no_grad)", t_op_f, fwd), ("ringattn op forward+backward", t_op, total),
                       ("ringattn op fwd+bwd, deterministic=False", t_op_nd, total),
                       ("PyTorch recipe forward+backward", t_rec, total)):
        print("  %-34s %10.3f %12.4g %9.1f" % (name, t, f, f / (t * 1e-3) / 1e12))
    print("speedup of the op over the recipe (forward+backward): %.2fx (deterministic=True, the default), "
          "%.2fx (deterministic=False)" % (t_rec / t_op, t_rec / t_op_nd))

    # 3. The Python layer's overhead, interleaved with the direct calls.
    call = rt._prepare(rt._Options(LONGNET4, False, "interleaved", None, None, "cuda", "nccl", None, 60.0), q, k, v)
    o = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    dq, dk, dv = (torch.empty_like(q) for _ in range(3))
    stream = torch.cuda.current_stream().cuda_stream
    fwd_ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), lse.data_ptr())
    bwd_ptrs = fwd_ptrs + (dout.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr())

    def direct_forward():
        rt.check(call.ctx.forward(call.batch, call.seq, *fwd_ptrs, stream))

    def direct_step():
        direct_forward()
        rt.check(call.ctx.backward(call.batch, call.seq, *bwd_ptrs, stream))

    def op_step_fresh_grads():  # as a training step after optimizer.zero_grad(set_to_none=True)
        for x in (q, k, v):
            x.grad = None
        op_step()

    def op_forward_recorded():  # autograd records the op (saves O, LSE, Q, K, V), no backward
        rt.dilated_attention(q, k, v, LONGNET4, backend="cuda", transport="nccl")

    for name, op, direct in (("forward", op_forward, direct_forward),
                             ("forward, autograd recording", op_forward_recorded, direct_forward),
                             ("forward+backward", op_step, direct_step),
                             ("forward+backward, grads set to None first", op_step_fresh_grads, direct_step)):
        t_o, t_d = [], []
        for i in range(args.warmup + 2 * args.iters):
            a = timed(op, 1, 0)
            b = timed(direct, 1, 0)
            if i >= args.warmup:
                t_o.append(a)
                t_d.append(b)
        mo, md = sorted(t_o)[len(t_o) // 2], sorted(t_d)[len(t_d) // 2]
        print("overhead of the Python op over the direct call, %s: op %.3f ms, direct %.3f ms: %+.2f%% "
              "(medians of %d interleaved pairs)" % (name, mo, md, 100.0 * (mo / md - 1.0), len(t_o)))

    # As a training loop runs: STEPS steps back to back with no wait in between (the
    # host prepares step s+1 while the GPU runs step s), events around the whole loop;
    # the pairs above wait for the GPU after every call, so the host's time before the
    # first kernel of each call shows there as GPU time.
    steps = 8

    def loop(fn):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(steps):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / steps

    for name, op, direct in (("forward", op_forward, direct_forward),
                             ("forward+backward, grads set to None first", op_step_fresh_grads, direct_step)):
        t_o, t_d = [], []
        for i in range(args.warmup + args.iters):
            a, b = loop(op), loop(direct)
            if i >= args.warmup:
                t_o.append(a)
                t_d.append(b)
        mo, md = sorted(t_o)[len(t_o) // 2], sorted(t_d)[len(t_d) // 2]
        print("overhead of the Python op over the direct call, %s, %d steps back to back: op %.3f ms, direct %.3f ms "
              "per step: %+.2f%% (medians of %d interleaved loops)" % (name, steps, mo, md, 100.0 * (mo / md - 1.0), len(t_o)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=65536)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--warmup-s", type=float, default=2.0,
                    help="seconds of op and recipe steps before any timing (default 2)")
    args = ap.parse_args()
    ok = check_correctness()
    speed(args)
    print("torch_op: %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
