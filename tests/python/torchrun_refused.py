"""Under torchrun (WORLD_SIZE set, no MPI launcher) each process is a one-rank
MPI world: the first call must refuse to run, saying why, rather than compute
this process's shard as if it were the whole sequence. Run by CTest with
WORLD_SIZE=2 and no mpirun."""
import os

import torch

import ringattn
import ringattn.torch as rt

assert os.environ.get("WORLD_SIZE") == "2", "run with WORLD_SIZE=2"
q = torch.randn(1, 8, 2, 4)
try:
    rt.dilated_attention(q, q, q, [(8, 1)])
except ringattn.RingattnError as e:
    msg = str(e)
    assert "WORLD_SIZE=2" in msg and "MPI_COMM_WORLD has 1 rank" in msg and "mpirun -np 2" in msg, msg
    print("torchrun_refused: OK:", msg)
else:
    raise SystemExit("torchrun_refused: FAILED: a one-rank MPI world ran under WORLD_SIZE=2")
