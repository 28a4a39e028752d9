#!/bin/bash
# Wrapper for several ranks sharing one GPU over NCCL: each rank claims its own
# host id so NCCL does not refuse the duplicate device, and talks over sockets
# on loopback (DESIGN.md). Used as: mpirun -np N nccl_hostid.sh ringattn ...
export NCCL_HOSTID="ringattn-host-${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}" NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 \
       NCCL_NET=Socket NCCL_SOCKET_IFNAME=lo NCCL_NVLS_ENABLE=0
exec "$@"
