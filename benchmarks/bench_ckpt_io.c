/* bench_ckpt_io.c: checkpoint I/O of one rank for a model shape read from a config.json alone (random weights):
 * the training pause (the host copy of the parameters and of this rank's optimizer slice: a memcpy on the CPU
 * backend), the write of model.safetensors + the rank's optimizer shard through the checkpoint writer's path
 * (st_write, then ckpt_seal_file: fsync + crc32 read back), and the read of its slice back (st_open + copy, as
 * tckpt_resume does; the page cache is warm). Usage: bench_ckpt_io CONFIG_DIR RANKS WORKDIR (rank 0's share:
 * the whole model file and 1/RANKS of the AdamW moments). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "hfmodel.h"
#include "safetensors.h"

static void fill(float *p, size_t n, uint32_t s) {
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (float)(int32_t)s * 1e-10f;
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: bench_ckpt_io CONFIG_DIR RANKS WORKDIR\n");
        return 2;
    }
    ModelConfig c;
    XrErr e = {{0}};
    if (hf_load_config(argv[1], &c, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    int R = atoi(argv[2]);
    const char *w = argv[3];
    int64_t H = c.hidden, I = c.intermediate; /* bench_zero_memory's count */
    int64_t n = (int64_t)c.vocab_size * H + (int64_t)c.max_pos * H + (int64_t)c.type_vocab * H + 2 * H +
                (int64_t)c.layers * (3 * H * H + 3 * H + H * H + H + 2 * H + I * H + I + H * I + H + 2 * H) + H * H + 2 * H + 1;
    int64_t sh = n / R;
    float *p = malloc((size_t)n * 4), *m = malloc((size_t)sh * 8), *cp = malloc((size_t)(n + 2 * sh) * 4);
    if (!p || !m || !cp) return fprintf(stderr, "out of memory\n"), 1;
    fill(p, (size_t)n, 1), fill(m, (size_t)(2 * sh), 2);
    double t0 = xr_now();
    memcpy(cp, p, (size_t)n * 4);
    memcpy(cp + n, m, (size_t)sh * 8);
    double pause = xr_now() - t0;
    free(cp);
    double mb = 1e6, bytes_model = (double)n * 4, bytes_shard = (double)sh * 8;
    t0 = xr_now();
    char *mp = xr_path_join(w, "model.safetensors"), *sp = xr_path_join(w, "optimizer-00000-of-R.safetensors");
    StWriteTensor mt = {"w", 1, {n}, p};
    StWriteTensor st[2] = {{"exp_avg", 1, {sh}, m}, {"exp_avg_sq", 1, {sh}, m + sh}};
    CkptFile f1, f2;
    if (st_write(mp, &mt, 1, NULL, 0, 0, &e) || ckpt_seal_file(w, "model.safetensors", &f1, &e) ||
        st_write(sp, st, 2, NULL, 0, 0, &e) || ckpt_seal_file(w, "optimizer-00000-of-R.safetensors", &f2, &e))
        return fprintf(stderr, "%s\n", e.msg), 1;
    double tw = xr_now() - t0;
    t0 = xr_now();
    SafeTensors a, b;
    if (st_open(&a, mp, &e) || st_open(&b, sp, &e)) return fprintf(stderr, "%s\n", e.msg), 1;
    memcpy(p, a.tensors[0].data, (size_t)n * 4);
    for (int i = 0; i < 2; i++) memcpy(m + i * sh, st_find(&b, i ? "exp_avg_sq" : "exp_avg")->data, (size_t)sh * 4);
    st_close(&a), st_close(&b);
    double tr = xr_now() - t0;
    printf("{\"config\": \"%s\", \"params\": %lld, \"ranks\": %d, \"rank0_bytes\": %.0f, \"pause_host_copy_s\": %.3f, "
           "\"write_s\": %.3f, \"write_MBps\": %.1f, \"read_warm_s\": %.3f, \"read_MBps\": %.1f}\n",
           argv[1], (long long)n, R, bytes_model + bytes_shard, pause, tw, (bytes_model + bytes_shard) / mb / tw, tr,
           (bytes_model + bytes_shard) / mb / tr);
    unlink(mp), unlink(sp);
    free(mp), free(sp), free(p), free(m);
    return 0;
}
