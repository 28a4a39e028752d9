"""MPI's life cycle and the cache of communicators and contexts (no torch here).

A ringattn Context is collective to create (it agrees on the config over its
communicator and, on the cuda backend with NCCL, bootstraps a communicator),
so it is made once per (communicator, config) and kept: later calls with the
same config reuse it. `clear_cache()` drops them all (collective: call it on
every rank); at exit they are closed before MPI is finalized.
"""
import atexit
import os

# torch first, when it is installed: its wheel brings its own CUDA runtime and
# NCCL under the same sonames (libcudart.so.13, libnccl.so.2) as the system's
# that a CUDA build of this extension links. Whichever loads first serves both;
# torch needs its own (an older system NCCL lacks symbols torch uses, and torch
# then fails to import), while the runtime's calls are served by torch's newer ones.
try:
    import torch  # noqa: F401
except ImportError:
    pass

try:
    from . import _C
except ImportError as e:  # pragma: no cover - a message for a missing build
    raise ImportError(
        "ringattn._C (the extension over the C++ runtime) is not built or cannot load: "
        "install with `pip install --no-build-isolation ./python` from the repository root "
        "(README, 'PyTorch'); the loader said: %s" % e
    ) from e

from ._errors import RingattnError, RingattnTypeError, check

_comms = {}  # None (MPI_COMM_WORLD) or id(mpi4py comm) -> (the user's comm object, _C.Comm)
_contexts = {}  # (comm key, config key) -> _C.Context
_mpi_ready = False


def version():
    """The runtime library's version, e.g. "0.1.0"."""
    return _C.version()


def named_branches(name, seq):
    """The branches (w, r) of a named configuration of docs/SPEC.md for N = seq tokens."""
    r = _C.named_branches(str(name), int(seq))
    if isinstance(r, tuple):
        check(r)
    return [tuple(b) for b in r]


def named_config_names():
    return list(_C.named_config_names())


def _ensure_mpi():
    global _mpi_ready
    if _mpi_ready:
        return
    # mpi4py, when imported first, has initialized MPI and finalizes it in a
    # C-level exit hook, which runs after every Python atexit handler: the
    # contexts are closed by _shutdown first either way.
    check(_C.mpi_init())
    atexit.register(_shutdown)
    _mpi_ready = True


def _check_launcher(world_size):
    # Under torchrun each process is an MPI world of its own (a singleton):
    # running on would compute every shard as if it were the whole sequence.
    ws = os.environ.get("WORLD_SIZE")
    if ws is not None and ws.isdigit() and int(ws) != world_size:
        raise RingattnError(
            "WORLD_SIZE=%s (a torchrun launch?) but MPI_COMM_WORLD has %d rank(s): ringattn's ranks come "
            "from MPI, so launch with `mpirun -np %s python ...` (a context from a torch process group is "
            "not implemented yet; see the README's 'PyTorch' section)" % (ws, world_size, ws),
            3, "kUnsupported")


def get_comm(comm=None):
    """The binding's Comm for MPI_COMM_WORLD (None) or an mpi4py communicator.

    Collective over that communicator the first time it is seen (a duplicate
    is made for the binding's own agreements)."""
    key = None if comm is None else id(comm)
    entry = _comms.get(key)
    if entry is not None and entry[0] is comm:
        return key, entry[1]
    if comm is not None and not callable(getattr(comm, "py2f", None)):
        raise RingattnTypeError(
            "comm is a %s (allowed: None for MPI_COMM_WORLD, or an mpi4py communicator such as "
            "mpi4py.MPI.COMM_WORLD.Split(...))" % type(comm).__name__, 1, "kInvalidArgument")
    _ensure_mpi()
    c = _C.Comm.create(None if comm is None else comm.py2f())
    if isinstance(c, tuple):
        check(c)
    if comm is None:
        _check_launcher(c.size)
    # The comm object is kept, so its id() cannot be reused by another one.
    _comms[key] = (comm, c)
    return key, c


def get_context(comm_key, comm, config_key, create_args):
    """The cached Context of (communicator, config); created (collectively) on first use."""
    k = (comm_key, config_key)
    ctx = _contexts.get(k)
    if ctx is None:
        ctx = _C.Context.create(comm, *create_args)
        if isinstance(ctx, tuple):
            check(ctx)
        _contexts[k] = ctx
    return ctx


def clear_cache():
    """Close every cached context and communicator (collective: every rank calls it)."""
    for ctx in list(_contexts.values()):
        ctx.close()
    _contexts.clear()
    for _, c in list(_comms.values()):
        c.close()
    _comms.clear()


def _shutdown():
    clear_cache()
    _C.mpi_finalize()
