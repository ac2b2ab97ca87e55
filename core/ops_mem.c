/* ops_mem.c: the backends' allocation counter (ops_mem_stats: live and peak bytes of what ops_alloc and the
 * backend's own scratch handed out, kept per pointer in an open-addressing table hung off the Backend) and the
 * memory a device can still give (ops_mem_available: the host's available RAM within the cgroup's limit, or the
 * GPU's free memory). The plan of a training run (encoder_train_plan) is checked against both. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "ops_table.h"
#include "xr_common.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

struct OpsMem {
    uintptr_t *key; /* 0: empty slot */
    size_t *bytes;
    size_t cap, n; /* cap: a power of two */
    XrMemStats s;
};

static size_t mem_slot(uintptr_t k, size_t cap) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

static void mem_put(struct OpsMem *t, uintptr_t k, size_t bytes) {
    size_t i = mem_slot(k, t->cap);
    while (t->key[i]) i = (i + 1) & (t->cap - 1);
    t->key[i] = k;
    t->bytes[i] = bytes;
    t->n++;
}

static void mem_grow(struct OpsMem *t) {
    struct OpsMem old = *t;
    t->cap = old.cap ? old.cap * 2 : 256;
    t->key = xr_calloc(t->cap, sizeof *t->key);
    t->bytes = xr_calloc(t->cap, sizeof *t->bytes);
    t->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.key[i]) mem_put(t, old.key[i], old.bytes[i]);
    free(old.key);
    free(old.bytes);
}

void ops_mem_note_alloc(Backend *be, void *p, size_t bytes) {
    if (!p) return;
    if (!be->mem) be->mem = xr_calloc(1, sizeof *be->mem);
    struct OpsMem *t = be->mem;
    if (2 * (t->n + 1) > t->cap) mem_grow(t);
    mem_put(t, (uintptr_t)p, bytes);
    t->s.live += bytes;
    t->s.allocs++;
    if (t->s.live > t->s.peak) t->s.peak = t->s.live;
}

void ops_mem_note_free(Backend *be, void *p) {
    struct OpsMem *t = be->mem;
    if (!p || !t || !t->cap) return;
    size_t i = mem_slot((uintptr_t)p, t->cap);
    while (t->key[i] && t->key[i] != (uintptr_t)p) i = (i + 1) & (t->cap - 1);
    if (!t->key[i]) xr_die("ops_free: %p was not allocated by this backend (or freed twice)", p);
    t->s.live -= t->bytes[i];
    t->key[i] = 0;
    t->n--;
    /* backward-shift deletion: entries after the hole that hash at or before it move into it */
    for (size_t j = (i + 1) & (t->cap - 1); t->key[j]; j = (j + 1) & (t->cap - 1)) {
        size_t h = mem_slot(t->key[j], t->cap);
        int movable = i <= j ? (h <= i || h > j) : (h <= i && h > j);
        if (movable) {
            t->key[i] = t->key[j], t->bytes[i] = t->bytes[j];
            t->key[j] = 0;
            i = j;
        }
    }
}

void ops_mem_release(Backend *be) {
    if (!be->mem) return;
    free(be->mem->key);
    free(be->mem->bytes);
    free(be->mem);
    be->mem = NULL;
}

void ops_mem_stats(const Backend *be, XrMemStats *s) {
    if (be->mem) *s = be->mem->s;
    else memset(s, 0, sizeof *s);
}

void ops_mem_reset_peak(Backend *be) {
    if (be->mem) be->mem->s.peak = be->mem->s.live;
}

/* A number from a one-line file (cgroup v2 memory.max holds "max" when unlimited): -1 when absent. */
static int64_t read_i64_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64] = "";
    int64_t v = -1;
    if (fgets(buf, sizeof buf, f) && buf[0] >= '0' && buf[0] <= '9') v = strtoll(buf, NULL, 10);
    fclose(f);
    return v;
}

/* MemAvailable of /proc/meminfo (the kernel's estimate of what can be allocated without swapping), bounded by
 * the cgroup v2 limit of this process's container (memory.max - memory.current), where the OOM killer acts
 * first. */
static size_t host_available(void) {
    size_t avail = SIZE_MAX;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = (size_t)kb * 1024;
        fclose(f);
    }
    int64_t max = read_i64_file("/sys/fs/cgroup/memory.max"), cur = read_i64_file("/sys/fs/cgroup/memory.current");
    if (max > 0 && cur >= 0) {
        size_t room = max > cur ? (size_t)(max - cur) : 0;
        if (room < avail) avail = room;
    }
    return avail;
}

size_t ops_mem_available(Backend *be) {
    const char *test = getenv("XR_TEST_MEM_AVAILABLE"); /* tests: pretend the device can give this many bytes */
    if (test && *test) return (size_t)strtoull(test, NULL, 10);
#ifdef XR_HAVE_CUDA
    if (be->device == XR_DEV_CUDA) return cuda_ops_mem_free(be);
#endif
    return host_available();
}

size_t ops_attention_scratch(Backend *be, int S, int max_len, int NH, int dh, int lse) {
#ifdef XR_HAVE_CUDA
    if (be->device == XR_DEV_CUDA) return cuda_ops_attention_scratch(be, S, max_len, NH, dh, lse);
#endif
    (void)be, (void)S, (void)max_len, (void)NH, (void)dh, (void)lse;
    return 0;
}
