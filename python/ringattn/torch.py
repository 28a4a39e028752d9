"""ringattn as a differentiable PyTorch op.

    import ringattn.torch as rt
    attn = rt.DilatedAttention(branches=[(2048, 1), (4096, 2)], causal=True)
    o = attn(q, k, v)            # q, k, v: (B, L, H, D), this rank's shard of N = L * P tokens

Each MPI rank passes its own contiguous shard [p*L, (p+1)*L) of the sequence
(rank p of MPI_COMM_WORLD, or of the mpi4py communicator given as `comm`) and
gets the same shard of O (and, with return_lse=True, of LSE, float32, (B, L,
H)). The function is docs/SPEC.md's; the gradient is the runtime's exact
backward (Context::backward). Every call is collective: all ranks of the
communicator make the same calls in the same order, backward included.

Tensors: CPU tensors on the cpu backend (float32, float16, bfloat16), CUDA
tensors on the cuda backend (float16, bfloat16; head dim 64 or 128), on the
current CUDA stream. A wrong tensor (type, dtype, device, layout, shape) is
found on the rank that passed it and agreed on by all ranks in one small
allreduce before any K/V moves: every rank raises (TypeError or ValueError,
naming the tensor and what is allowed), none is left waiting.

Saved for backward: the inputs Q, K, V (references, not copies) and O and LSE;
no attention matrix and nothing per branch. Under torch.no_grad, or when no
input requires grad, nothing is saved.
"""
import math

import torch as _torch

from . import _runtime
from ._errors import RingattnTypeError, RingattnValueError, check

__all__ = ["DilatedAttention", "dilated_attention"]

_DTYPE_CODES = {_torch.float32: 0, _torch.float16: 1, _torch.bfloat16: 2}
_BACKEND_DTYPES = {
    "cpu": (_torch.float32, _torch.float16, _torch.bfloat16),
    "cuda": (_torch.float16, _torch.bfloat16),
}
_HEAD_OFFSETS = {"interleaved": 0, "blocked": 1}
_BACKENDS = {"cpu": 0, "cuda": 1}
_TRANSPORTS = {"mpi": 0, "nccl": 1}
_INVALID = 1  # StatusCode::kInvalidArgument


def _names(values):
    return ", ".join(str(v) for v in values)


class _Options:
    """What a DilatedAttention is: checked once, locally (no communication)."""

    __slots__ = ("branches", "causal", "head_offsets", "scale", "dtype", "backend", "transport", "comm", "timeout",
                 "deterministic")

    def __init__(self, branches, causal, head_offsets, scale, dtype, backend, transport, comm, timeout,
                 deterministic=True):
        if isinstance(branches, str):
            if branches not in _runtime.named_config_names():
                raise ValueError("branches='%s' is not a named configuration (allowed: %s, or a list of (w, r) pairs)"
                                 % (branches, _names(_runtime.named_config_names())))
            self.branches = branches
        else:
            try:
                pairs = tuple((int(w), int(r)) for w, r in branches)
                ok = len(pairs) > 0 and all(w == bw and r == br for (w, r), (bw, br) in zip(pairs, branches))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise TypeError("branches=%r (allowed: a non-empty list of (w, r) integer pairs, e.g. "
                                "[(2048, 1), (4096, 2)], or a name: %s)" % (branches, _names(_runtime.named_config_names())))
            self.branches = pairs  # values (1 <= r <= w) are the runtime's to check, with its own message
        if not isinstance(causal, bool):
            raise TypeError("causal=%r (allowed: True, False)" % (causal,))
        self.causal = causal
        if head_offsets not in _HEAD_OFFSETS:
            raise ValueError("head_offsets=%r (allowed: %s)" % (head_offsets, _names(_HEAD_OFFSETS)))
        self.head_offsets = head_offsets
        if scale is not None and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError("scale=%r (allowed: None for 1/sqrt(head dim), or a finite number > 0)" % (scale,))
        self.scale = None if scale is None else float(scale)
        if dtype is not None and dtype not in _DTYPE_CODES:
            raise TypeError("dtype=%r (allowed: None for the inputs' dtype, %s)" % (dtype, _names(_DTYPE_CODES)))
        self.dtype = dtype
        if backend is not None and backend not in _BACKENDS:
            raise ValueError("backend=%r (allowed: None for the inputs' device, %s)" % (backend, _names(_BACKENDS)))
        self.backend = backend
        if transport is not None and transport not in _TRANSPORTS:
            raise ValueError("transport=%r (allowed: None for nccl on cuda and mpi on cpu, %s)"
                             % (transport, _names(_TRANSPORTS)))
        self.transport = transport
        self.comm = comm
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout=%r (allowed: seconds > 0 after which a silent peer fails the call)" % (timeout,))
        self.timeout = float(timeout)
        if not isinstance(deterministic, bool):
            raise TypeError("deterministic=%r (allowed: True, False)" % (deterministic,))
        self.deterministic = deterministic


def _check_tensors(opts, q, k, v):
    """Local checks of the inputs: None, or (exception class, message)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, _torch.Tensor):
            return RingattnTypeError, "%s is a %s (allowed: a torch.Tensor of shape (B, L, H, D))" % (name, type(t).__name__)
    backend = opts.backend or ("cuda" if q.device.type == "cuda" else "cpu")
    allowed = _BACKEND_DTYPES[backend]
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.layout != _torch.strided:
            return RingattnTypeError, "%s has layout %s (allowed: torch.strided, a dense tensor)" % (name, t.layout)
        if t.dtype not in allowed:
            return RingattnTypeError, "%s has dtype %s (allowed on the %s backend: %s)" % (name, t.dtype, backend, _names(allowed))
        if opts.dtype is not None and t.dtype != opts.dtype:
            return RingattnTypeError, "%s has dtype %s but this attention was made for dtype %s" % (name, t.dtype, opts.dtype)
        if t.dtype != q.dtype:
            return RingattnTypeError, "%s has dtype %s but q has %s (q, k and v must have one dtype)" % (name, t.dtype, q.dtype)
        if backend == "cpu" and t.device.type != "cpu":
            return RingattnValueError, ("%s is on device %s (the cpu backend takes CPU tensors; CUDA tensors run on "
                                        "backend 'cuda')" % (name, t.device))
        if backend == "cuda" and t.device.type != "cuda":
            return RingattnValueError, "%s is on device %s (the cuda backend takes CUDA tensors)" % (name, t.device)
        if t.device != q.device:
            return RingattnValueError, "%s is on device %s but q is on %s (allowed: one device)" % (name, t.device, q.device)
        if t.dim() != 4:
            return RingattnValueError, ("%s has shape %s (allowed: 4 dimensions (B, L, H, D): batch, this rank's tokens, "
                                        "heads, head dim)" % (name, tuple(t.shape)))
        if t.shape != q.shape:
            return RingattnValueError, "%s has shape %s but q has %s (allowed: one shape)" % (name, tuple(t.shape), tuple(q.shape))
        if t.numel() == 0:
            return RingattnValueError, "%s has shape %s (allowed: every dimension at least 1)" % (name, tuple(t.shape))
        if not t.is_contiguous():
            return RingattnValueError, ("%s is not contiguous (shape %s, strides %s; allowed: contiguous (B, L, H, D), "
                                        "as .contiguous() makes it)" % (name, tuple(t.shape), t.stride()))
    return None


class _Call:
    """One shape on one context: runs the forward and the backward.

    On the cuda backend the calls run on the tensors' device and the current
    CUDA stream (in the backward, the stream autograd runs it on); the runtime
    orders its work after what is already queued there and O, LSE, dQ, dK, dV
    are ready in that stream's order when the call returns."""

    __slots__ = ("ctx", "batch", "seq", "cuda")

    def __init__(self, ctx, batch, seq, cuda):
        self.ctx, self.batch, self.seq, self.cuda = ctx, batch, seq, cuda

    def forward(self, q, k, v):
        o = _torch.empty_like(q, memory_format=_torch.contiguous_format)
        lse = _torch.empty(q.shape[:3], dtype=_torch.float32, device=q.device)
        if self.cuda:
            with _torch.cuda.device(q.device):
                stream = _torch.cuda.current_stream(q.device).cuda_stream
                st = self.ctx.forward(self.batch, self.seq, q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                      o.data_ptr(), lse.data_ptr(), stream)
        else:
            st = self.ctx.forward(self.batch, self.seq, q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                  o.data_ptr(), lse.data_ptr(), 0)
        check(st)
        return o, lse

    def backward(self, q, k, v, o, lse, grad_o):
        # autograd may hand a broadcast or strided gradient; the runtime reads (B, L, H, D) rows.
        grad_o = grad_o.contiguous()
        dq = _torch.empty_like(q, memory_format=_torch.contiguous_format)
        dk = _torch.empty_like(k, memory_format=_torch.contiguous_format)
        dv = _torch.empty_like(v, memory_format=_torch.contiguous_format)
        ptrs = (q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr(), lse.data_ptr(), grad_o.data_ptr(),
                dq.data_ptr(), dk.data_ptr(), dv.data_ptr())
        if self.cuda:
            with _torch.cuda.device(q.device):
                st = self.ctx.backward(self.batch, self.seq, *ptrs, _torch.cuda.current_stream(q.device).cuda_stream)
        else:
            st = self.ctx.backward(self.batch, self.seq, *ptrs, 0)
        check(st)
        return dq, dk, dv


class _DilatedAttentionFunction(_torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, call):
        o, lse = call.forward(q, k, v)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.call = call
        # The runtime's backward takes dO only: LSE is an output, not a path for gradients.
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    @_torch.autograd.function.once_differentiable
    def backward(ctx, grad_o, grad_lse):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = ctx.call.backward(q, k, v, o, lse, grad_o)
        need = ctx.needs_input_grad
        return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None)


_NO_CONFIG = ([], False, 0.0, 0, 0, 0, 0, 0, 0, 1.0, True)  # what a rank whose checks failed sends along


def _prepare(opts, q, k, v):
    """Checks (local, then agreed by all ranks with the config and shape) and the context of this call."""
    comm_key, comm = _runtime.get_comm(opts.comm)
    bad = _check_tensors(opts, q, k, v)
    create_args, batch, seq = _NO_CONFIG, 0, 0
    if bad is None:
        batch, shard, heads, head_dim = q.shape
        seq = shard * comm.size
        backend = opts.backend or ("cuda" if q.device.type == "cuda" else "cpu")
        branches = opts.branches
        if isinstance(branches, str):
            named = _runtime._C.named_branches(branches, seq)
            if isinstance(named, tuple):
                bad = (RingattnValueError, named[1])
            branches = () if bad else tuple(tuple(b) for b in named)
        transport = opts.transport or ("nccl" if backend == "cuda" else "mpi")
        if bad is None:
            create_args = (branches, opts.causal, opts.scale or 0.0, _HEAD_OFFSETS[opts.head_offsets],
                           _DTYPE_CODES[q.dtype], _BACKENDS[backend], _TRANSPORTS[transport], heads, head_dim,
                           opts.timeout, opts.deterministic)
    if bad is not None:
        create_args, batch, seq = _NO_CONFIG, 0, 0
    agreed = comm.agree(_INVALID if bad else 0, bad[1] if bad else "", *create_args, batch, seq)
    if agreed is not None:
        # This rank's own exception class when it failed, else a ValueError.
        cls = bad[0] if bad else RingattnValueError
        raise cls(agreed[1], agreed[0], _runtime._C.status_code_name(agreed[0]))
    cuda = create_args[5] == _BACKENDS["cuda"]
    key = create_args + ((q.device.index if cuda else -1),)  # one device per rank: the index is not agreed
    if cuda:
        with _torch.cuda.device(q.device):  # the runtime's streams and buffers live on the current device
            ctx = _runtime.get_context(comm_key, comm, key, create_args)
    else:
        ctx = _runtime.get_context(comm_key, comm, key, create_args)
    return _Call(ctx, batch, seq, cuda)


def _compiler_disable(fn):
    """Runs fn eagerly under torch.compile (a graph break at the op): the call is
    collective (MPI agreement, NCCL) and takes the raw CUDA stream handle, which
    dynamo cannot trace (inside a traced region current_stream() is a generic
    torch.Stream without .cuda_stream)."""
    disable = getattr(getattr(_torch, "compiler", None), "disable", None)
    if disable is None:  # torch < 2.1
        try:
            import torch._dynamo as _dynamo
            disable = _dynamo.disable
        except ImportError:  # no dynamo: nothing to escape from
            return fn
    return disable(fn)


@_compiler_disable
def _attention(opts, q, k, v, return_lse):
    call = _prepare(opts, q, k, v)
    if _torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        o, lse = _DilatedAttentionFunction.apply(q, k, v, call)
    else:
        o, lse = call.forward(q, k, v)  # nothing to differentiate: nothing saved
    return (o, lse) if return_lse else o


def dilated_attention(q, k, v, branches, *, causal=False, head_offsets="interleaved", scale=None, dtype=None,
                      backend=None, transport=None, comm=None, timeout=60.0, deterministic=True, return_lse=False):
    """Dilated (LongNet) ring attention of this rank's shard; see DilatedAttention."""
    opts = _Options(branches, causal, head_offsets, scale, dtype, backend, transport, comm, timeout, deterministic)
    return _attention(opts, q, k, v, return_lse)


class DilatedAttention(_torch.nn.Module):
    """Dilated (LongNet) ring attention over the ranks of an MPI communicator.

    branches: a list of (w, r) pairs (segment length, dilation rate; docs/SPEC.md)
        or a named configuration: "longnet4", "longnet-paper", "geometric", "dense"
        (the last two depend on N, so each N gets a context of its own).
    causal: mask keys after the query (global positions).
    head_offsets: "interleaved" (o(h) = h mod r) or "blocked" (as torchscale).
    scale: None for 1/sqrt(D).
    dtype: None (the inputs' dtype) or the one dtype the inputs must have.
    backend: None (from the inputs' device), "cpu" or "cuda".
    transport: None (nccl on cuda, mpi on cpu), "mpi" or "nccl".
    comm: None for MPI_COMM_WORLD, or an mpi4py communicator (its ranks hold
        the shards in rank order).
    timeout: seconds after which a silent peer fails the call on every rank.
    deterministic: True (the default): the backward's reruns give the same bits;
        False: on cuda dQ is summed with float32 atomics (about 1.1x faster
        backward, the same memory). The cpu backend is always
        deterministic.

    forward(q, k, v, return_lse=False): (B, L, H, D) tensors of this rank's
    shard; returns O (B, L, H, D) and, with return_lse, LSE (B, L, H), float32,
    -inf where no branch selects the token for that head (O is 0 there).
    """

    def __init__(self, branches, *, causal=False, head_offsets="interleaved", scale=None, dtype=None, backend=None,
                 transport=None, comm=None, timeout=60.0, deterministic=True):
        super().__init__()
        self._opts = _Options(branches, causal, head_offsets, scale, dtype, backend, transport, comm, timeout,
                              deterministic)

    def forward(self, q, k, v, return_lse=False):
        return _attention(self._opts, q, k, v, return_lse)

    def extra_repr(self):
        o = self._opts
        return "branches=%s, causal=%s, head_offsets=%s, scale=%s, dtype=%s, backend=%s, deterministic=%s" % (
            o.branches, o.causal, o.head_offsets, o.scale, o.dtype, o.backend, o.deterministic)
