"""A small GPT-style model learning associative recall, its attention ringattn's
dilated ring attention, the sequence sharded over MPI ranks.

    mpirun -np 2 python examples/torch_train.py                       # dilated: learns recall (~30 s, 2 cores)
    mpirun -np 2 python examples/torch_train.py --branches 32:1       # local only: stays at chance
    mpirun -np 2 python examples/torch_train.py --resume              # go on from the checkpoint

The task (as examples/train/task.hpp): a sequence of N tokens is N/C cells of
C tokens (--cell). `--pairs` key/value pairs sit in cells [k, v, filler...]
that end at least --gap tokens before the first query; the last `--pairs`
cells ask for every pair once, in random order: [Q, k, v, filler...]. The
loss is on the answer only (predicting v at the query's key). Keys are
distinct within a sequence, values uniform: without the pair the answer is a
guess (chance 1/--values). A dilated branch (w, r) lets a query at t see only
keys at positions congruent to t modulo r (head h: offset h mod r), and both
the pair's value and the query's key sit at offset 1 of their cell, so with C
a multiple of every r, head 1 of any branch that spans both cells can carry
the answer; a branch with w <= --gap (the local 32:1) never sees a pair.

The model (as examples/train/model.hpp): token embedding plus a token shift
(x_t = E[tok_t] + s * E[tok_{t-1}], s learned per channel, so the value's
position also holds its key and one attention layer does the lookup), layers
of RMSNorm, Q/K/V projections (rotary positions on --rope-dims dims per head),
ringattn attention, O projection, residual, RMSNorm, GELU MLP, residual; final
RMSNorm and an output head tied to the embedding. Wv and Wo start as the
identity, so attention copies what it attends to from step 0. Without these
the model barely leaves chance (below, and the C++ example's exploration:
bench/results/train-cpu-2026-11-27/README.md, "How the defaults were found");
--no-token-shift and --no-copy-init are those ablations.

Each rank holds the contiguous tokens [p*L, (p+1)*L) of every sequence (L =
N/P); everything but the attention works token by token, so each rank runs the
model on its own tokens (the token shift reads the token before its shard from
the whole batch, which every rank draws from the same seed), ringattn's
forward and backward exchange what the attention needs, and the parameters'
gradients are summed over ranks (mpi4py). Rank 0 prints and saves checkpoints
(torch.save); a batch depends only on (--seed, step), so --resume goes on with
the batches the uninterrupted run would have seen. --device cuda runs the
attention on ringattn's cuda backend (bf16, head dim 64 or 128: e.g. --dim 256
--heads 4; not run yet: written on a machine without a GPU).

Measured on a 2-core CPU, np 2, the defaults (N=1024, 24 pairs at least 128
tokens before the queries, 32 values, d=32, 2 heads, 2 layers, batch 4, 1000
steps; bench/results/torch-train-cpu-2026-11-27/): branches 32:1,256:8,1024:16
reach held-out accuracy 1.000 (0.997 at step 400) in 27 s; the local branch
32:1 alone stays at chance, 0.027 (chance 1/32 = 0.031), in 25 s. Without the
token shift 0.118, without the identity init 0.044 (1000 steps).
"""
import argparse
import math
import os
import time

from mpi4py import MPI  # first: mpi4py initializes MPI and finalizes it at exit

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
    p.add_argument("--seq", type=int, default=1024, help="tokens per sequence, all ranks together (N)")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--pairs", type=int, default=24, help="key/value pairs (and queries) per sequence")
    p.add_argument("--keys", type=int, default=32, help="key vocabulary (distinct within a sequence: >= --pairs)")
    p.add_argument("--values", type=int, default=32, help="value vocabulary (chance = 1/values)")
    p.add_argument("--fillers", type=int, default=1, help="filler vocabulary (1: a blank; more: noise, slower to learn)")
    p.add_argument("--cell", type=int, default=16, help="tokens per cell (a multiple of every branch's r)")
    p.add_argument("--gap", type=int, default=128, help="tokens, at least, from any pair to any query")
    p.add_argument("--branches", default=None,
                   help="w:r,... (default 32:1,256:8,N:16: a local window, every 8th token of 256, "
                        "every 16th of the whole sequence; 32:1 alone is the local-only ablation)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--mlp", type=int, default=64, help="hidden width of the MLP")
    p.add_argument("--rope-dims", type=int, default=4, help="rotary dims per head (the rest carry content unrotated)")
    p.add_argument("--no-token-shift", action="store_true", help="drop the token shift (ablation)")
    p.add_argument("--no-copy-init", action="store_true", help="random Wv, Wo instead of the identity (ablation)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=50, help="steps of linear warmup, then cosine to lr/10")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=0, help="held-out accuracy every K steps too (0: at the end only)")
    p.add_argument("--eval-seqs", type=int, default=32, help="held-out sequences per evaluation")
    p.add_argument("--ckpt", default="torch_train.pt", help="checkpoint file (rank 0 writes it; empty: none)")
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--resume", action="store_true", help="load --ckpt first and go on from its step")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank (0: torch's default)")
    p.add_argument("--min-accuracy", type=float, default=None,
                   help="exit 1 unless the final held-out accuracy (percent) reaches this (a check for tests)")
    p.add_argument("--max-accuracy", type=float, default=None,
                   help="exit 1 if the final held-out accuracy (percent) is above this (a check for tests)")
    a = p.parse_args()
    if a.seq % SIZE:
        p.error("--seq %d is not divisible by the %d ranks" % (a.seq, SIZE))
    if a.cell < 3 or a.seq % a.cell:
        p.error("--cell %d: at least 3 (a query cell holds Q, key, value) and a divisor of --seq %d" % (a.cell, a.seq))
    if a.pairs < 1 or a.pairs > a.keys:
        p.error("--pairs %d (allowed: 1 to --keys %d: keys are distinct within a sequence)" % (a.pairs, a.keys))
    if a.values < 1 or a.fillers < 1:
        p.error("--values and --fillers must be at least 1")
    if pair_cells(a) < a.pairs:
        p.error("--pairs %d do not fit: --seq %d has room for %d pair cells of %d tokens before the %d query cells "
                "and the --gap of %d tokens" % (a.pairs, a.seq, pair_cells(a), a.cell, a.pairs, a.gap))
    if a.dim % a.heads or (a.dim // a.heads) % 2:
        p.error("--dim %d / --heads %d must be an even head dim" % (a.dim, a.heads))
    if a.rope_dims % 2 or not 0 <= a.rope_dims <= a.dim // a.heads:
        p.error("--rope-dims %d (allowed: even, 0 to the head dim %d)" % (a.rope_dims, a.dim // a.heads))
    if a.device == "cuda" and a.dim // a.heads not in (64, 128):
        p.error("--device cuda needs a head dim (--dim / --heads) of 64 or 128, not %d (e.g. --dim 256 --heads 4)"
                % (a.dim // a.heads))
    branches = a.branches or "32:1,256:8,%d:16" % a.seq
    try:
        a.branches = [tuple(int(x) for x in b.split(":")) for b in branches.split(",")]
        assert all(len(b) == 2 for b in a.branches)
    except (ValueError, AssertionError):
        p.error("--branches %r (allowed: w:r,w:r,...)" % branches)
    bad = [r for _, r in a.branches if r > 0 and a.cell % r]
    if bad:  # allowed, but then a pair and its query need not share a residue: say so
        say("torch_train: note: --cell %d is not a multiple of r = %s: some pairs are out of reach of their query"
            % (a.cell, bad))
    return a


# ---- the task -------------------------------------------------------------------------------------------------

def pair_cells(a):
    """Cells where pairs may go: [0, pair_cells)."""
    end = a.seq - a.pairs * a.cell - a.gap  # a pair cell must end by here
    return end // a.cell if end > 0 else 0


def make_batch(args, seed):
    """Tokens and answers of `args.batch` whole sequences, (B, N) each; answers IGNORE but at the queries' keys.

    Token ids: fillers [0, F), keys [F, F+K), values [F+K, F+K+V), the query marker F+K+V."""
    gen = torch.Generator().manual_seed(seed)
    b, n, c, f, k = args.batch, args.seq, args.cell, args.fillers, args.keys
    qmark = f + k + args.values
    tokens = torch.randint(0, f, (b, n), generator=gen)
    answers = torch.full((b, n), IGNORE)
    q0 = n - args.pairs * c  # first query cell
    qpos = q0 + torch.arange(args.pairs) * c
    for i in range(b):
        keys = torch.randperm(k, generator=gen)[:args.pairs]
        values = torch.randint(0, args.values, (args.pairs,), generator=gen)
        cells = torch.randperm(pair_cells(args), generator=gen)[:args.pairs] * c
        order = torch.randperm(args.pairs, generator=gen)
        tokens[i, cells] = f + keys
        tokens[i, cells + 1] = f + k + values
        tokens[i, qpos] = qmark
        tokens[i, qpos + 1] = f + keys[order]
        tokens[i, qpos + 2] = f + k + values[order]
        answers[i, qpos + 1] = f + k + values[order]
    return tokens, answers


def batch_seed(args, stream, index):
    """The seed of batch `index` of a stream (0: training, 1: held-out): the same on every rank, at any resume."""
    return (args.seed * 1000003 + stream * 1000000007 + index * 7919) % (2 ** 63)


# ---- the model ------------------------------------------------------------------------------------------------

def rope(x, pos, rot):
    """Rotary positions on the first `rot` dims of each head of (B, L, H, D), pairs (2i, 2i+1), global positions."""
    if rot == 0:
        return x
    half = rot // 2
    freq = 10000.0 ** (-2.0 * torch.arange(half, device=x.device, dtype=torch.float32) / rot)
    ang = pos[:, None].float() * freq[None, :]
    cos, sin = ang.cos()[None, :, None, :].to(x.dtype), ang.sin()[None, :, None, :].to(x.dtype)
    x0, x1 = x[..., 0:rot:2], x[..., 1:rot:2]
    r = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1).flatten(-2)
    return torch.cat([r, x[..., rot:]], dim=-1)


class Block(nn.Module):
    def __init__(self, args, attention, attn_dtype):
        super().__init__()
        d = args.dim
        self.heads, self.rot, self.attn_dtype = args.heads, args.rope_dims, attn_dtype
        self.norm1, self.norm2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.w1, self.w2 = nn.Linear(d, args.mlp, bias=False), nn.Linear(args.mlp, d, bias=False)
        self.attention = attention

    def forward(self, x, pos):
        b, l, d = x.shape
        h = self.norm1(x)
        shape = (b, l, self.heads, d // self.heads)
        q = rope(self.wq(h).view(shape), pos, self.rot)
        k = rope(self.wk(h).view(shape), pos, self.rot)
        v = self.wv(h).view(shape)
        # ringattn takes contiguous (B, L, H, D) shards of this rank's tokens.
        dt = self.attn_dtype
        o = self.attention(q.to(dt).contiguous(), k.to(dt).contiguous(), v.to(dt).contiguous())
        x = x + self.wo(o.to(x.dtype).reshape(b, l, d))
        return x + self.w2(F.gelu(self.w1(self.norm2(x))))


class RecallGPT(nn.Module):
    def __init__(self, args, vocab, attn_dtype):
        super().__init__()
        # One attention module for all layers: one ringattn context (created on first use, then cached).
        attention = rt.DilatedAttention(args.branches, causal=True, dtype=attn_dtype)
        self.embed = nn.Embedding(vocab, args.dim)
        self.shift = None if args.no_token_shift else nn.Parameter(torch.linspace(0.0, 1.0, args.dim))
        self.blocks = nn.ModuleList(Block(args, attention, attn_dtype) for _ in range(args.layers))
        self.normf = nn.RMSNorm(args.dim, eps=1e-5)
        self.init(args)

    @torch.no_grad()
    def init(self, args):
        """As examples/train: matrices N(0, 0.02), residual outputs (wo, w2) scaled by 1/sqrt(2 layers),
        embedding rows of norm ~1 (the tied head's logits O(1)), Wv = Wo = identity + that noise."""
        d = args.dim
        nn.init.normal_(self.embed.weight, std=1.0 / math.sqrt(d))
        out_scale = 1.0 / math.sqrt(2.0 * args.layers)
        eye = torch.eye(d)
        for blk in self.blocks:
            for name in ("wq", "wk", "wv", "wo", "w1", "w2"):
                w = getattr(blk, name).weight
                nn.init.normal_(w, std=0.02 * (out_scale if name in ("wo", "w2") else 1.0))
                if name in ("wv", "wo") and not args.no_copy_init:
                    w.add_(eye)

    def forward(self, tokens, prev, pos):
        """tokens: (B, L) of this rank; prev: (B, L) the token before each (-1 at the start of the sequence)."""
        e = self.embed.weight
        x = F.embedding(tokens, e)
        if self.shift is not None:
            x = x + self.shift * (F.embedding(prev.clamp(min=0), e) * (prev >= 0).unsqueeze(-1).to(e.dtype))
        for blk in self.blocks:
            x = blk(x, pos)
        return self.normf(x) @ e.t()  # the head tied to the embedding


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


def run_batch(model, args, seed, device, total_answers):
    """Loss (this rank's share of the global mean), correct answers on this rank."""
    tokens, answers = make_batch(args, seed)
    prev = torch.cat([torch.full_like(tokens[:, :1], -1), tokens[:, :-1]], dim=1)
    l = args.seq // SIZE
    mine = slice(RANK * l, (RANK + 1) * l)
    pos = torch.arange(RANK * l, (RANK + 1) * l, device=device)
    logits = model(tokens[:, mine].to(device), prev[:, mine].to(device), pos)
    target = answers[:, mine].to(device)
    asked = target != IGNORE
    sel, tgt = logits[asked].float(), target[asked]  # the head's logits at the answers only
    loss = F.cross_entropy(sel, tgt, reduction="sum") / total_answers
    correct = (sel.argmax(-1) == tgt).sum().item()
    return loss, correct


def evaluate(model, args, device):
    """Held-out accuracy (fraction) over --eval-seqs sequences of stream 1, no gradients."""
    model.eval()
    correct = answers = 0
    seqs = 0
    with torch.no_grad():
        while seqs < args.eval_seqs:
            _, c = run_batch(model, args, batch_seed(args, 1, seqs), device, 1)
            correct += COMM.allreduce(c, op=MPI.SUM)
            answers += args.batch * args.pairs
            seqs += args.batch
    model.train()
    return correct / answers, correct, answers


def main():
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.device == "cuda":
        torch.cuda.set_device(RANK % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    attn_dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(args.seed)  # the same initial parameters on every rank
    vocab = args.fillers + args.keys + args.values + 1
    model = RecallGPT(args, vocab, attn_dtype).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]  # matrices; not norms, not the shift
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))

    def lr_factor(s):  # linear warmup, then cosine from 1 to 0.1
        if s < args.warmup:
            return (s + 1) / args.warmup
        t = min(1.0, (s - args.warmup) / max(1, args.steps - args.warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    step = 0
    if args.resume:
        ck = torch.load(args.ckpt, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        step = ck["step"]
        say("resumed from %s at step %d" % (args.ckpt, step))
    nparams = sum(p.numel() for p in model.parameters())
    say("torch_train: %d ranks, N=%d (%d per rank), batch %d, %d pairs, %d values, cell %d, gap %d, branches %s, "
        "%d layers, dim %d, %d heads, %d parameters, device %s" % (
            SIZE, args.seq, args.seq // SIZE, args.batch, args.pairs, args.values, args.cell, args.gap,
            args.branches, args.layers, args.dim, args.heads, nparams, device))
    total = args.batch * args.pairs  # answers per batch over all ranks
    start = time.monotonic()
    t0, seen_loss, seen_correct, seen_steps = time.monotonic(), 0.0, 0, 0
    model.train()
    while step < args.steps:
        loss, correct = run_batch(model, args, batch_seed(args, 0, step), device, total)
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
        if args.eval_every and step % args.eval_every == 0 and step < args.steps:
            acc, c, n = evaluate(model, args, device)
            say("eval  step %5d: held-out accuracy %.4f (%d/%d answers), %.1f s" % (
                step, acc, c, n, time.monotonic() - start))
        if args.ckpt and (step % args.ckpt_every == 0 or step == args.steps):
            if RANK == 0:  # the parameters are the same on every rank
                tmp = args.ckpt + ".tmp"
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "step": step, "args": vars(args)}, tmp)
                os.replace(tmp, args.ckpt)
                say("step %5d: checkpoint %s" % (step, args.ckpt))
            COMM.Barrier()
    acc, c, n = evaluate(model, args, device)
    say("held-out accuracy %.1f%% (%d/%d answers; chance %.1f%%), %.1f s" % (
        100.0 * acc, c, n, 100.0 / args.values, time.monotonic() - start))
    if args.min_accuracy is not None and 100.0 * acc < args.min_accuracy:
        say("torch_train: FAILED: held-out accuracy %.1f%% < --min-accuracy %.1f%%" % (100.0 * acc, args.min_accuracy))
        return 1
    if args.max_accuracy is not None and 100.0 * acc > args.max_accuracy:
        say("torch_train: FAILED: held-out accuracy %.1f%% > --max-accuracy %.1f%%" % (100.0 * acc, args.max_accuracy))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
