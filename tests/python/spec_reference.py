"""docs/SPEC.md in plain PyTorch float64, written from the text alone (not from
the runtime's code): the oracle of the Python tests.

Tensors are (B, N, H, D), the whole sequence. The branches' key sets are a
multiset: `selection_counts` counts, for each (head, query, key), how many
branches select the pair, and the softmax weighs each key by that count (a key
two branches select counts twice). Gradients come from torch.autograd through
this function, so they do not share SPEC section 4's formulas either.
"""
import math

import torch


def head_offset(rule, r, h, heads):
    """o_i(h) of SPEC section 1."""
    if rule == "interleaved":
        return h % r
    if rule == "blocked":
        padded = r * math.ceil(heads / r)
        return h // (padded // r)
    raise ValueError("head offset rule %r (allowed: interleaved, blocked)" % (rule,))


def selection_counts(n, heads, branches, causal, head_offsets):
    """(H, N, N) int64: number of branches i with key u in A_i(t, h) (SPEC section 2)."""
    t = torch.arange(n)
    counts = torch.zeros(heads, n, n, dtype=torch.int64)
    for w, r in branches:
        segment = t // w
        position = t - segment * w
        same_segment = segment[:, None] == segment[None, :]
        for h in range(heads):
            kept = (position % r) == head_offset(head_offsets, r, h, heads)
            pair = kept[:, None] & kept[None, :] & same_segment
            if causal:
                pair &= t[None, :] <= t[:, None]
            counts[h] += pair.to(torch.int64)
    return counts


def attention(q, k, v, branches, causal=False, head_offsets="interleaved", scale=None, multiset=True):
    """O (B, N, H, D) and LSE (B, N, H) of SPEC section 3, in float64, differentiable.

    multiset=False counts a key once however many branches select it: not
    SPEC's function, used only to show that a test tells the two apart."""
    q, k, v = q.double(), k.double(), v.double()
    b, n, heads, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    counts = selection_counts(n, heads, branches, causal, head_offsets)
    if not multiset:
        counts = counts.clamp(max=1)
    x = torch.einsum("bthd,buhd->bhtu", q, k) * scale
    selected = counts > 0
    logits = torch.where(selected, x + counts.double().clamp(min=1).log(), torch.full_like(x, -math.inf))
    # A token no branch selects for head h: O = 0, LSE = -inf. Its row is
    # replaced by zeros before logsumexp so that no NaN enters the graph.
    any_key = selected.any(-1)
    lse = torch.logsumexp(torch.where(any_key[..., None], logits, torch.zeros_like(logits)), dim=-1)
    p = torch.exp(logits - lse[..., None])
    o = torch.einsum("bhtu,buhd->bthd", p, v)
    lse = torch.where(any_key, lse, torch.full_like(lse, -math.inf))
    return o, lse.permute(0, 2, 1)


# docs/SPEC.md section 5: O relative L2 and LSE absolute bounds per input dtype
# (CPU); gradients twice the O bound.
TOLERANCES = {
    torch.float32: (1e-5, 1e-4),
    torch.float16: (5e-3, 1e-2),
    torch.bfloat16: (2e-2, 5e-2),
}


def rel_l2(x, ref):
    """||x - ref|| / ||ref|| in float64 (NaN if x has a NaN: it then fails every bound)."""
    x, ref = x.double(), ref.double()
    den = ref.norm().item()
    num = (x - ref).norm().item()
    return num / den if den > 0 else num


def lse_ratio(lse, ref, bound):
    """Worst LSE error over the elements as a fraction of SPEC's bound there,
    max(bound, 4e-6 |ref|): <= 1 passes. -inf must sit exactly where the
    reference has it (else inf); a NaN gives NaN, which fails every bound."""
    lse, ref = lse.double(), ref.double()
    if torch.isnan(lse).any():
        return math.nan
    ref_inf = torch.isinf(ref)
    if not torch.equal(torch.isinf(lse) & (lse < 0), ref_inf) or torch.isposinf(lse).any():
        return math.inf
    finite = ~ref_inf
    if not finite.any():
        return 0.0
    allowed = torch.clamp(4e-6 * ref[finite].abs(), min=bound)
    return ((lse[finite] - ref[finite]).abs() / allowed).max().item()
