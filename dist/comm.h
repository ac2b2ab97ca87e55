/* comm.h: the host-memory communicator (MPI): rank and size, barrier, broadcast and gathers of
 * variable-size byte buffers (any size: counts above 2 GiB are sent in pieces), and the abort hook that
 * makes one rank's fatal error stop the whole job instead of leaving the others hanging. */
#ifndef XR_COMM_H
#define XR_COMM_H
#include <stddef.h>
#include <stdint.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Comm Comm;

/* MPI_Init (unless already initialised) on MPI_COMM_WORLD. Works as a plain process (a singleton of size 1)
 * and under mpirun / srun. With size > 1 it installs xr_abort_hook so xr_die calls MPI_Abort. Dies when MPI
 * cannot start. */
Comm *comm_init(int *argc, char ***argv);
/* MPI_Finalize (when comm_init initialised MPI) and free. Every rank must call it. */
void comm_finalize(Comm *c);

int comm_rank(const Comm *c);
int comm_size(const Comm *c);
/* Ranks on this node (MPI_Comm_split_type SHARED), for splitting the node's cores between them. */
int comm_local_size(const Comm *c);
/* This rank's index among the ranks of its node (for picking a GPU): the launcher's variable when set
 * (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, SLURM_LOCALID), else the shared-memory split of the world
 * made at comm_init. */
int comm_local_rank(const Comm *c);
void comm_barrier(Comm *c);
/* Abort every rank of the job with this exit code (MPI_Abort; plain exit with one rank). */
void comm_abort(Comm *c, int code) __attribute__((noreturn));

/* Broadcast n bytes from root. n must be the same on every rank (broadcast the size first if it is not). */
void comm_bcast(Comm *c, void *buf, size_t n, int root);
/* Broadcast a malloc'd buffer of root's size: on root *buf / *n are inputs, elsewhere they are filled
 * with a fresh malloc'd buffer (one extra NUL byte after the data, so text can be used as a C string). */
void comm_bcast_buf(Comm *c, char **buf, size_t *n, int root);

/* Gather each rank's n bytes to root, concatenated in rank order. On root returns a malloc'd buffer
 * (*out_n its size; counts[r] the bytes from rank r when counts != NULL, size comm_size entries);
 * elsewhere returns NULL. */
char *comm_gather(Comm *c, const void *buf, size_t n, int root, size_t *out_n, size_t *counts);
/* Same, but every rank receives the concatenation. */
char *comm_allgather(Comm *c, const void *buf, size_t n, size_t *out_n, size_t *counts);

/* In-place all-reduce SUM of n floats / doubles (MPI_Allreduce; any n: cut into pieces of at most 2^28
 * elements). Every rank gets the same bits: the reduction order is MPI's, fixed for a given rank count. */
void comm_allreduce_sum_f32(Comm *c, float *buf, size_t n);
void comm_allreduce_sum_f64(Comm *c, double *buf, size_t n);

/* Collective error check: every rank passes its own status (0 ok, -1 failed with e filled). Returns 0 when
 * all succeeded; otherwise copies the message of the lowest failing rank into e on every rank (so rank 0
 * can print it once and all ranks can exit cleanly) and returns -1. */
int comm_check(Comm *c, int status, XrErr *e);

#ifdef __cplusplus
}
#endif
#endif
