"""A small GPT-style model learning associative recall, its attention ringattn's
dilated ring attention, the sequence sharded over MPI ranks.

    mpirun -np 2 python examples/torch_train.py                # ~1-2 min on 2 CPU cores
    mpirun -np 4 python examples/torch_train.py --seq 2048 --steps 600
    mpirun -np 2 python examples/torch_train.py --resume       # go on from the checkpoint

The task: a sequence of N filler tokens holds `--pairs` key/value pairs (a key
token, then its value token) scattered over its first half; in its second half
each key appears once more, as a query, and the model must answer the value it
was paired with. The loss is on the answers only. The two sides of a pair can
be N/2 tokens apart and on different ranks, so the answer has to travel through
the attention's ring.

Each rank holds the contiguous tokens [p*L, (p+1)*L) of every sequence (L =
N/P); everything but the attention works token by token, so each rank runs the
model on its own tokens, ringattn's forward and backward exchange what the
attention needs, and the parameters' gradients are summed over ranks (mpi4py).
Every rank draws the same batch from the same seed and keeps its shard; rank 0
prints and saves checkpoints (torch.save). --device cuda runs the attention on
ringattn's cuda backend (bf16, head dim 64 or 128: e.g. --dim 256 --heads 4;
not run yet: written on a machine without a GPU).

On 2 CPU cores the model learns slowly: with --seq 256 --pairs 16 --fillers 1
--branches 32:1,256:2 --steps 1500 at np 2 (~3 min) the loss went from 3.63 to
3.35 and the accuracy from 2.9% to ~8% (chance 3.1%); recall's jump to high
accuracy needs more steps than that (a GPU run).
"""
import argparse
import math
import os
import time

from mpi4py import MPI  # first: mpi4py initializes MPI and finalizes it at exit

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import ringattn.torch as rt

COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
IGNORE = -100  # answers of non-query positions


def say(*a):
    if RANK == 0:
        print(*a, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, default=512, help="tokens per sequence, all ranks together (N)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--pairs", type=int, default=8, help="key/value pairs (and queries) per sequence")
    p.add_argument("--keys", type=int, default=32, help="key vocabulary (values have as many tokens)")
    p.add_argument("--fillers", type=int, default=4, help="filler vocabulary (the tokens between pairs)")
    p.add_argument("--branches", default=None,
                   help="w:r,... (default 32:1,N:4: a local window and every 4th token of the whole sequence)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--ckpt", default="torch_train.pt", help="checkpoint file (rank 0 writes it)")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="load --ckpt first and go on from its step")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="exit 1 unless the final held-out accuracy reaches this (a check for tests)")
    a = p.parse_args()
    if a.seq % SIZE:
        p.error("--seq %d is not divisible by the %d ranks" % (a.seq, SIZE))
    if a.pairs < 1 or 2 * a.pairs > a.seq // 2 or a.pairs > a.keys:
        p.error("--pairs %d (allowed: 1 to min(--keys, N/4))" % a.pairs)
    if a.dim % a.heads or (a.dim // a.heads) % 2:
        p.error("--dim %d / --heads %d must be an even head dim" % (a.dim, a.heads))
    if a.device == "cuda" and a.dim // a.heads not in (64, 128):
        p.error("--device cuda needs a head dim (--dim / --heads) of 64 or 128, not %d (e.g. --dim 256 --heads 4)"
                % (a.dim // a.heads))
    branches = a.branches or "32:1,%d:4" % a.seq
    try:
        a.branches = [tuple(int(x) for x in b.split(":")) for b in branches.split(",")]
        assert all(len(b) == 2 for b in a.branches)
    except (ValueError, AssertionError):
        p.error("--branches %r (allowed: w:r,w:r,...)" % branches)
    return a


def make_batch(args, gen):
    """Tokens and answers of whole sequences, (B, N) each; answers IGNORE except at queries."""
    b, n, k = args.batch, args.seq, args.keys
    f = args.fillers  # token ids: fillers [0, f), keys [f, f+k), values [f+k, f+2k)
    tokens = torch.randint(0, f, (b, n), generator=gen)
    answers = torch.full((b, n), IGNORE)
    half = n // 2
    for i in range(b):
        keys = torch.randperm(k, generator=gen)[:args.pairs]
        values = torch.randint(0, k, (args.pairs,), generator=gen)
        slots = torch.randperm(half // 2, generator=gen)[:args.pairs] * 2  # pairs do not overlap
        queries = half + torch.randperm(n - half, generator=gen)[:args.pairs]
        tokens[i, slots] = f + keys
        tokens[i, slots + 1] = f + k + values
        tokens[i, queries] = f + keys
        answers[i, queries] = f + k + values
    return tokens, answers


def rope(x, pos):
    """Rotary position embedding of (B, L, H, D) at global positions pos (L,)."""
    d = x.shape[-1] // 2
    freq = 1.0 / (10000 ** (torch.arange(d, device=x.device, dtype=torch.float32) / d))
    ang = pos[:, None].float() * freq[None, :]
    cos, sin = ang.cos()[None, :, None, :].to(x.dtype), ang.sin()[None, :, None, :].to(x.dtype)
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, dim, heads, attention, attn_dtype):
        super().__init__()
        self.heads, self.attn_dtype = heads, attn_dtype
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.attention = attention

    def forward(self, x, pos):
        b, l, dim = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, l, 3, self.heads, dim // self.heads).unbind(2)
        # ringattn takes contiguous (B, L, H, D) shards of this rank's tokens.
        q, k = rope(q, pos).to(self.attn_dtype), rope(k, pos).to(self.attn_dtype)
        o = self.attention(q.contiguous(), k.contiguous(), v.to(self.attn_dtype).contiguous())
        x = x + self.proj(o.to(x.dtype).reshape(b, l, dim))
        return x + self.mlp(self.ln2(x))


class RecallGPT(nn.Module):
    def __init__(self, args, vocab, attn_dtype):
        super().__init__()
        # One attention module for all layers: one ringattn context (created on first use, then cached).
        attention = rt.DilatedAttention(args.branches, causal=True, dtype=attn_dtype)
        self.embed = nn.Embedding(vocab, args.dim)
        self.blocks = nn.ModuleList(Block(args.dim, args.heads, attention, attn_dtype) for _ in range(args.layers))
        self.ln = nn.LayerNorm(args.dim)
        self.head = nn.Linear(args.dim, vocab)

    def forward(self, tokens, pos):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x, pos)
        return self.head(self.ln(x))


def allreduce_grads(model):
    """Sum every parameter's gradient over the ranks (one buffer, one MPI call)."""
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads]).to("cpu", torch.float64)
    buf = flat.numpy()
    COMM.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    flat = torch.from_numpy(buf)
    i = 0
    for g in grads:
        g.copy_(flat[i:i + g.numel()].view_as(g))
        i += g.numel()


def run_batch(model, args, gen, device, total_answers):
    """Loss (this rank's share of the global mean), correct answers, answers on this rank."""
    tokens, answers = make_batch(args, gen)
    l = args.seq // SIZE
    mine = slice(RANK * l, (RANK + 1) * l)
    pos = torch.arange(RANK * l, (RANK + 1) * l, device=device)
    logits = model(tokens[:, mine].to(device), pos)
    target = answers[:, mine].to(device)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE,
                           reduction="sum") / total_answers
    asked = target != IGNORE
    correct = (logits.argmax(-1)[asked] == target[asked]).sum().item()
    return loss, correct


def main():
    args = parse_args()
    device = torch.device(args.device)
    if args.device == "cuda":
        torch.cuda.set_device(RANK % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    attn_dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(args.seed)  # the same initial parameters on every rank
    vocab = args.fillers + 2 * args.keys
    model = RecallGPT(args, vocab, attn_dtype).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    step = 0
    if args.resume:
        ck = torch.load(args.ckpt, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        step = ck["step"]
        say("resumed from %s at step %d" % (args.ckpt, step))
    nparams = sum(p.numel() for p in model.parameters())
    say("torch_train: %d ranks, N=%d (%d per rank), batch %d, %d pairs, branches %s, %d layers, dim %d, %d heads, "
        "%d parameters, device %s" % (SIZE, args.seq, args.seq // SIZE, args.batch, args.pairs, args.branches,
                                      args.layers, args.dim, args.heads, nparams, device))
    total = args.batch * args.pairs  # answers per batch over all ranks
    gen = torch.Generator().manual_seed(args.seed * 1000003 + step)  # the same batches on every rank
    t0, seen_loss, seen_correct, seen_steps = time.monotonic(), 0.0, 0, 0
    while step < args.steps:
        model.train()
        loss, correct = run_batch(model, args, gen, device, total)
        opt.zero_grad(set_to_none=False)
        loss.backward()  # collective: ringattn's backward runs on every rank
        allreduce_grads(model)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        seen_loss += COMM.allreduce(loss.item(), op=MPI.SUM)
        seen_correct += COMM.allreduce(correct, op=MPI.SUM)
        seen_steps += 1
        if step % args.log_every == 0 or step == args.steps:
            ms = 1000 * (time.monotonic() - t0) / seen_steps
            say("step %5d/%d  loss %.4f  accuracy %5.1f%%  lr %.2e  %.1f ms/step" % (
                step, args.steps, seen_loss / seen_steps, 100.0 * seen_correct / (seen_steps * total),
                sched.get_last_lr()[0], ms))
            t0, seen_loss, seen_correct, seen_steps = time.monotonic(), 0.0, 0, 0
        if args.ckpt and (step % args.ckpt_every == 0 or step == args.steps):
            if RANK == 0:  # the parameters are the same on every rank
                tmp = args.ckpt + ".tmp"
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "step": step, "args": vars(args)}, tmp)
                os.replace(tmp, args.ckpt)
                say("step %5d: checkpoint %s" % (step, args.ckpt))
            COMM.Barrier()
    # Held-out sequences (another seed's stream), no gradients.
    model.eval()
    held = torch.Generator().manual_seed(args.seed * 1000003 + 10 ** 9)
    correct = 0
    with torch.no_grad():
        for _ in range(4):
            _, c = run_batch(model, args, held, device, total)
            correct += COMM.allreduce(c, op=MPI.SUM)
    acc = 100.0 * correct / (4 * total)
    say("held-out accuracy %.1f%% (%d answers; chance %.1f%%)" % (acc, 4 * total, 100.0 / args.keys))
    if args.min_accuracy is not None and acc < args.min_accuracy:
        say("torch_train: FAILED: held-out accuracy %.1f%% < --min-accuracy %.1f%%" % (acc, args.min_accuracy))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
