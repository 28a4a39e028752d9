#!/usr/bin/env python3
"""The PyTorch ring that ringattn's `dense` ring is compared with (issue 13).

ring-flash-attn's recipe, written here from its idea: every rank holds one
contiguous shard of Q, K, V; at each of the P steps it runs fused attention
(cuDNN SDPA, which returns the log-sum-exp; flash SDPA where cuDNN is absent)
of its queries against the K/V block in hand, while `batch_isend_irecv`
passes that block to the next rank and receives the previous rank's; the
partial outputs merge in float32 by the log-sum-exp rule. Non-causal (plain
`dense`). Times with CUDA events (warm-up, median), prints useful FLOPs,
effective TFLOP/s and bytes moved per rank, and a send/recv probe of the same
block over the same ring (the link's bandwidth for this exchange).

  mpirun -np 4 python3 bench/torch_ring.py --seq 128k --heads 16 --head-dim 128
  torchrun --nproc-per-node 4 bench/torch_ring.py --seq 128k
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist


def count(s):
    s = str(s).strip()
    mult = {"k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20}.get(s[-1:], 1)
    v = int(s[:-1] if mult > 1 else s) * mult
    if v <= 0:
        raise argparse.ArgumentTypeError(f"count {s!r} must be positive")
    return v


def env_int(*names, default=0):
    for n in names:
        if n in os.environ:
            return int(os.environ[n])
    return default


def attention(q, k, v, scale):
    """(B,H,L,D) -> out (B,H,L,D) in q's dtype, lse (B,H,L) float32."""
    try:
        r = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, False, False, scale=scale)
        return r[0], r[1].reshape(q.shape[0], q.shape[1], q.shape[2]).float()
    except (RuntimeError, AttributeError):
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
        return r[0], r[1].float()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seq", type=count, default=128 * 1024, help="total tokens N (k/M suffixes)")
    ap.add_argument("--heads", type=count, default=16)
    ap.add_argument("--head-dim", type=count, default=128)
    ap.add_argument("--batch", type=count, default=1)
    ap.add_argument("--dtype", choices=["bf16", "f16"], default="bf16")
    ap.add_argument("--iters", type=count, default=10)
    ap.add_argument("--warmup", type=count, default=3, help="warm-up forwards at least (default 3)")
    ap.add_argument("--warmup-s", type=float, default=1.0,
                    help="then more warm-up forwards until this many seconds have passed (default 1; 0: count only). "
                         "A GPU under its power cap holds its boost clock only for the first ~0.1 s of load, "
                         "so this times the sustained state, as `ringattn bench --warmup-ms` does")
    a = ap.parse_args()
    if not a.warmup_s >= 0:  # also NaN
        sys.exit(f"error: --warmup-s {a.warmup_s} must be a number >= 0")

    rank = env_int("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK")
    world = env_int("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", default=1)
    local = env_int("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    if a.seq % world:
        sys.exit(f"error: --seq {a.seq} is not divisible by {world} ranks")
    torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", torch.cuda.current_device()))
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float16
    B, L, H, D = a.batch, a.seq // world, a.heads, a.head_dim
    scale = D ** -0.5
    g = torch.Generator(device="cuda").manual_seed(1234 + rank)
    q = torch.randn(B, H, L, D, device="cuda", dtype=dt, generator=g)
    kv = torch.randn(2, B, H, L, D, device="cuda", dtype=dt, generator=g)
    nxt, prv = (rank + 1) % world, (rank - 1) % world

    def exchange(send, recv):
        ops = [dist.P2POp(dist.isend, send, nxt), dist.P2POp(dist.irecv, recv, prv)]
        return dist.batch_isend_irecv(ops)

    def forward():
        cur, buf = kv, torch.empty_like(kv)
        out = torch.zeros(B, H, L, D, device="cuda", dtype=torch.float32)
        lse = torch.full((B, H, L), float("-inf"), device="cuda", dtype=torch.float32)
        for step in range(world):
            reqs = exchange(cur, buf) if step + 1 < world else []
            o, l = attention(q, cur[0], cur[1], scale)
            new = torch.logaddexp(lse, l)
            out = out * torch.exp(lse - new).unsqueeze(-1) + o.float() * torch.exp(l - new).unsqueeze(-1)
            lse = new
            for r in reqs:
                r.wait()
            cur, buf = buf, cur
        return out.to(dt), lse

    def timed(fn, iters, warmup, warmup_s=0.0):
        """(median ms, warm-up runs, warm-up seconds)"""
        t0, runs = time.perf_counter(), 0
        while True:
            # rank 0 decides (every rank must run the same number of exchanges)
            go = torch.tensor([int(runs < warmup or time.perf_counter() - t0 < warmup_s)], device="cuda")
            dist.broadcast(go, 0)
            if not go.item():
                break
            fn()
            torch.cuda.synchronize()
            runs += 1
        warm_s = time.perf_counter() - t0
        ts = []
        for _ in range(iters):
            dist.barrier()
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            fn()
            e1.record()
            torch.cuda.synchronize()
            t = torch.tensor([e0.elapsed_time(e1)], device="cuda")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank's time
            ts.append(t.item())
        return statistics.median(ts), runs, warm_s

    o, l = forward()
    bad = torch.tensor([int(not (torch.isfinite(o.float()).all() and torch.isfinite(l).all()))], device="cuda")
    dist.all_reduce(bad)
    ms, warm_runs, warm_s = timed(forward, a.iters, a.warmup, a.warmup_s)
    flops = 4.0 * B * H * float(a.seq) * float(a.seq) * D  # useful FLOPs of dense non-causal attention, all ranks
    block = kv.numel() * kv.element_size()
    sent = block * (world - 1)
    buf = torch.empty_like(kv)
    probe = timed(lambda: [r.wait() for r in exchange(kv, buf)], a.iters, a.warmup)[0] if world > 1 else 0.0
    if rank == 0:
        print("# torch ring (cuDNN/flash SDPA per step + batch_isend_irecv + fp32 LSE merge), dense, non-causal")
        print(f"# device {torch.cuda.get_device_name()}, torch {torch.__version__}, ranks {world}, dtype {a.dtype}")
        print(f"# batch {B}, tokens {a.seq} ({L} per rank), heads {H}, head_dim {D}")
        print("# config   tokens  ranks  median_ms  useful_FLOPs  TFLOP/s  bytes_sent/rank  probe_ms(one block)  probe_GB/s")
        bw = block / probe / 1e6 if probe > 0 else 0.0
        print(f"  dense  {a.seq:8d}  {world:5d}  {ms:9.3f}  {flops:12.3e}  {flops / ms / 1e9:7.1f}  {sent:15d}  {probe:19.3f}  {bw:10.1f}")
        print(f"# median of {a.iters} (after {warm_runs} warm-up in {warm_s:.2f} s: --warmup {a.warmup}, "
              f"--warmup-s {a.warmup_s:g}), slowest rank; outputs finite: {'yes' if bad.item() == 0 else 'NO'}")
    dist.destroy_process_group()
    return 1 if bad.item() else 0


if __name__ == "__main__":
    sys.exit(main())
