# launch/slurm/gpu_env.sh: the NCCL settings the GPU sbatch scripts share (sourced). Each has a reason; a value
# already in the environment (the site's module, the user) wins.
# Say which transport NCCL picked and why it fell back (WARN: only problems; INFO for a first run on a new
# cluster: it prints the rings / trees and whether NVLink, P2P, IB and GPUDirect RDMA are in use).
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# NCCL's bootstrap (and socket transport) must use an interface that routes between nodes; the default guess
# can pick docker0 or a virtual bridge. Exclude those (^ = not these prefixes); a site may name its own.
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-^lo,docker,virbr}
# On InfiniBand clusters with several HCAs per node, list the ones facing the compute fabric, e.g.
#   export NCCL_IB_HCA=mlx5_0,mlx5_1,mlx5_2,mlx5_3
# (left to the site: a wrong list silently drops to fewer rails or to TCP; NCCL_DEBUG=INFO shows the NICs used.)
# Host threads per rank: the GPU does the model; the host thread tokenizes nothing at train time (token stores)
# and only feeds the device, so the task's cores are plenty.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
