"""A small test main for scripts launched by mpirun (the tests/mpi habit: every
rank runs the same tests in the same order, and one failing rank fails the
test on all ranks through an MPI_MAX reduction).

Inputs are fresh random each run: rank 0 draws the seed, broadcasts it and
prints it; RINGATTN_TEST_SEED=<seed> reruns a failure with the same inputs.
The last line is "<script>: np <P>: <n> passed, <m> failed"; the exit code is
non-zero on any failure.
"""
import os
import sys
import time
import traceback

from mpi4py import MPI  # first: mpi4py initializes MPI (and finalizes it at exit)

import torch

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()
SIZE = COMM.Get_size()


def say(*args):
    if RANK == 0:
        print(*args, flush=True)


def seed():
    s = os.environ.get("RINGATTN_TEST_SEED")
    s = int(s) if s else int.from_bytes(os.urandom(4), "little")
    return COMM.bcast(s, root=0)


def run(name, tests, only=None):
    base = seed()
    say("%s: np %d, seed %d (rerun with RINGATTN_TEST_SEED=%d), torch %s" % (name, SIZE, base, base, torch.__version__))
    passed = failed = 0
    for i, fn in enumerate(tests):
        if only and fn.__name__ not in only:
            continue
        torch.manual_seed(base + 1000 * i)  # the same on every rank: each takes its shard of the same inputs
        t0 = time.monotonic()
        ok = 1
        try:
            fn()
        except Exception:  # a failed check (AssertionError) or any error: this test fails, the next one runs
            ok = 0
            sys.stdout.write("rank %d: %s FAILED\n%s" % (RANK, fn.__name__, traceback.format_exc()))
            sys.stdout.flush()
        ok = COMM.allreduce(ok, op=MPI.MIN)
        say("[%s] %s (%.1f s)" % ("  OK  " if ok else "FAILED", fn.__name__, time.monotonic() - t0))
        passed += ok
        failed += 1 - ok
    say("%s: np %d: %d passed, %d failed" % (name, SIZE, passed, failed))
    return 1 if failed or passed == 0 else 0
