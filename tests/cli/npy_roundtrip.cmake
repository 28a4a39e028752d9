# run --out/--lse writes .npy; run --q/--k/--v reads them back; a file with
# the wrong head count is refused on every rank.
set(pre --allow-run-as-root --oversubscribe --bind-to none)
execute_process(COMMAND mpirun ${pre} -np 2 ${RA} run --branches 64:1,128:2 --seq 256 --heads 2 --head-dim 8 --iters 1 --warmup 0
                        --out ${DIR}/o.npy --lse ${DIR}/lse.npy RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "run --out failed (${rc}): ${out} ${err}")
endif()
# O has shape (1, 256, 2, 8): use it as q, k and v of a new run (2 ranks).
execute_process(COMMAND mpirun ${pre} -np 2 ${RA} run --branches 64:1 --heads 2 --head-dim 8 --iters 1 --warmup 0
                        --q ${DIR}/o.npy --k ${DIR}/o.npy --v ${DIR}/o.npy --out ${DIR}/o2.npy
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "run --q/--k/--v from .npy failed (${rc}): ${out} ${err}")
endif()
if(NOT out MATCHES "tokens 256")
  message(FATAL_ERROR "run did not take N=256 from the .npy: ${out}")
endif()
execute_process(COMMAND bash ${EXPECT} 2 "has shape \\(1, 256, 2, 8\\) but --heads 4" -- ${RA} run --branches 64:1 --heads 4 --head-dim 8
                        --q ${DIR}/o.npy --k ${DIR}/o.npy --v ${DIR}/o.npy RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "mis-shaped .npy was not refused on every rank: ${out} ${err}")
endif()
execute_process(COMMAND bash ${EXPECT} 2 "has shape \\(1, 256, 2\\)" -- ${RA} run --branches 64:1 --heads 2 --head-dim 8
                        --q ${DIR}/lse.npy --k ${DIR}/lse.npy --v ${DIR}/lse.npy RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "3-d LSE file as input was not refused on every rank: ${out} ${err}")
endif()
