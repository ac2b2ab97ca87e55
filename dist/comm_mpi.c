/* comm_mpi.c: the communicator of dist/comm.h on MPI (host memory). Byte counts are size_t; MPI counts are
 * int, so transfers are cut into pieces of at most XR_COMM_PIECE bytes and gathers go point to point. */
#include <assert.h>
#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"

/* Largest single MPI transfer; 1 GiB keeps every count well inside int. */
#define XR_COMM_PIECE ((size_t)1 << 30)
#define XR_COMM_TAG 4711

struct Comm {
    MPI_Comm world;
    int rank, size, local_rank, local_size;
    int we_initialised;
};

/* Declared in io/xr_common.c: called by xr_die before exit. */
extern void (*xr_abort_hook)(int code);

static void comm_mpi_abort_hook(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
}

static void comm_checked(int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "MPI error %d", rc);
    xr_die("%s failed: %s", what, msg);
}

Comm *comm_init(int *argc, char ***argv) {
    Comm *c = xr_calloc(1, sizeof *c);
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        if (MPI_Init(argc, argv) != MPI_SUCCESS) xr_die("MPI_Init failed (is Open MPI installed and usable?)");
        c->we_initialised = 1;
    }
    c->world = MPI_COMM_WORLD;
    /* Errors come back as codes so they are reported with our message instead of MPI's default abort. */
    comm_checked(MPI_Comm_set_errhandler(c->world, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    comm_checked(MPI_Comm_rank(c->world, &c->rank), "MPI_Comm_rank");
    comm_checked(MPI_Comm_size(c->world, &c->size), "MPI_Comm_size");
    c->local_size = 1;
    if (c->size > 1) {
        MPI_Comm node;
        comm_checked(MPI_Comm_split_type(c->world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node),
                     "MPI_Comm_split_type");
        comm_checked(MPI_Comm_size(node, &c->local_size), "MPI_Comm_size(node)");
        comm_checked(MPI_Comm_rank(node, &c->local_rank), "MPI_Comm_rank(node)");
        MPI_Comm_free(&node);
        xr_abort_hook = comm_mpi_abort_hook;
    }
    return c;
}

void comm_finalize(Comm *c) {
    if (!c) return;
    if (c->we_initialised) {
        xr_abort_hook = NULL;
        MPI_Finalize();
    }
    free(c);
}

int comm_rank(const Comm *c) { return c->rank; }
int comm_size(const Comm *c) { return c->size; }
int comm_local_size(const Comm *c) { return c->local_size; }

int comm_local_rank(const Comm *c) {
    static const char *vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return c->local_rank;
}

void comm_barrier(Comm *c) {
    comm_checked(MPI_Barrier(c->world), "MPI_Barrier");
}

void comm_abort(Comm *c, int code) {
    fflush(stdout);
    fflush(stderr);
    if (c && c->size > 1) MPI_Abort(c->world, code);
    exit(code);
}

void comm_bcast(Comm *c, void *buf, size_t n, int root) {
    char *p = buf;
    for (size_t off = 0; off < n; off += XR_COMM_PIECE) {
        size_t k = n - off < XR_COMM_PIECE ? n - off : XR_COMM_PIECE;
        comm_checked(MPI_Bcast(p + off, (int)k, MPI_BYTE, root, c->world), "MPI_Bcast");
    }
}

void comm_bcast_buf(Comm *c, char **buf, size_t *n, int root) {
    uint64_t len = c->rank == root ? (uint64_t)*n : 0;
    comm_checked(MPI_Bcast(&len, 1, MPI_UINT64_T, root, c->world), "MPI_Bcast(size)");
    if (c->rank != root) {
        *n = (size_t)len;
        *buf = xr_malloc(*n + 1);
        (*buf)[*n] = 0;
    }
    comm_bcast(c, *buf, *n, root);
}

static void comm_send(Comm *c, const void *buf, size_t n, int dest) {
    const char *p = buf;
    for (size_t off = 0; off < n; off += XR_COMM_PIECE) {
        size_t k = n - off < XR_COMM_PIECE ? n - off : XR_COMM_PIECE;
        comm_checked(MPI_Send(p + off, (int)k, MPI_BYTE, dest, XR_COMM_TAG, c->world), "MPI_Send");
    }
}

static void comm_recv(Comm *c, void *buf, size_t n, int src) {
    char *p = buf;
    for (size_t off = 0; off < n; off += XR_COMM_PIECE) {
        size_t k = n - off < XR_COMM_PIECE ? n - off : XR_COMM_PIECE;
        comm_checked(MPI_Recv(p + off, (int)k, MPI_BYTE, src, XR_COMM_TAG, c->world, MPI_STATUS_IGNORE),
                     "MPI_Recv");
    }
}

char *comm_gather(Comm *c, const void *buf, size_t n, int root, size_t *out_n, size_t *counts) {
    uint64_t mine = n;
    uint64_t *all = c->rank == root ? xr_malloc(sizeof(uint64_t) * (size_t)c->size) : NULL;
    comm_checked(MPI_Gather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, root, c->world), "MPI_Gather(size)");
    if (c->rank != root) {
        comm_send(c, buf, n, root);
        return NULL;
    }
    size_t total = 0;
    for (int r = 0; r < c->size; r++) total += (size_t)all[r];
    char *out = xr_malloc(total + 1);
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        if (r == root)
            memcpy(out + off, buf, n);
        else
            comm_recv(c, out + off, (size_t)all[r], r);
        if (counts) counts[r] = (size_t)all[r];
        off += (size_t)all[r];
    }
    out[total] = 0;
    *out_n = total;
    free(all);
    return out;
}

char *comm_allgather(Comm *c, const void *buf, size_t n, size_t *out_n, size_t *counts) {
    size_t total = 0;
    char *out = comm_gather(c, buf, n, 0, &total, counts);
    comm_bcast_buf(c, &out, &total, 0);
    if (counts) {
        uint64_t *tmp = xr_malloc(sizeof(uint64_t) * (size_t)c->size);
        for (int r = 0; r < c->size; r++) tmp[r] = c->rank == 0 ? (uint64_t)counts[r] : 0;
        comm_bcast(c, tmp, sizeof(uint64_t) * (size_t)c->size, 0);
        for (int r = 0; r < c->size; r++) counts[r] = (size_t)tmp[r];
        free(tmp);
    }
    *out_n = total;
    return out;
}

int comm_check(Comm *c, int status, XrErr *e) {
    assert(status == 0 || status == -1);
    int failed = status != 0 ? c->rank : INT_MAX, first = INT_MAX;
    comm_checked(MPI_Allreduce(&failed, &first, 1, MPI_INT, MPI_MIN, c->world), "MPI_Allreduce");
    if (first == INT_MAX) return 0;
    XrErr tmp;
    if (c->rank == first) tmp = *e;
    comm_bcast(c, tmp.msg, sizeof tmp.msg, first);
    tmp.msg[sizeof tmp.msg - 1] = 0;
    if (e) *e = tmp;
    return -1;
}

/* Pieces of at most 2^28 elements keep MPI's int count in range for any element size. */
#define XR_COMM_ELEMS ((size_t)1 << 28)

void comm_allreduce_sum_f32(Comm *c, float *buf, size_t n) {
    if (c->size == 1) return;
    for (size_t i = 0; i < n; i += XR_COMM_ELEMS) {
        size_t k = n - i < XR_COMM_ELEMS ? n - i : XR_COMM_ELEMS;
        comm_checked(MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_FLOAT, MPI_SUM, c->world), "MPI_Allreduce");
    }
}

void comm_allreduce_sum_f64(Comm *c, double *buf, size_t n) {
    if (c->size == 1) return;
    for (size_t i = 0; i < n; i += XR_COMM_ELEMS) {
        size_t k = n - i < XR_COMM_ELEMS ? n - i : XR_COMM_ELEMS;
        comm_checked(MPI_Allreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_DOUBLE, MPI_SUM, c->world), "MPI_Allreduce");
    }
}
