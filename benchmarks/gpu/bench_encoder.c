/* bench_encoder.c: xrank's GPU forward throughput without a tokenizer: loads a model directory on a CUDA
 * backend (encoder_load_on), runs encoder_forward_score or encoder_forward_embed on B random full-length sequences
 * of T tokens, and prints one JSON line with sequences/s. embed pools as the model's sentence-transformers config
 * says (modules.json's Pooling and Normalize modules: all-MiniLM-L6-v2 mean, normalised), else CLS, normalised
 * (bge-m3's, for a directory without that config); bench_embed_torch.py, the peer, follows the same rule, and both
 * print it ("pooling", "normalize"), so a comparison is of the same work.
 * Usage: bench_encoder MODEL_DIR score|embed T B REPS fp32|bf16 [DUMP_PREFIX]
 * DUMP_PREFIX: writes the first batch's ids (PREFIX.ids.i32) and outputs (PREFIX.out.f32) for a check
 * against PyTorch. Built by benchmarks/CMakeLists.txt (target bench_encoder, not part of `all`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "ops.h"
#ifdef XR_HAVE_CUDA
#include "cuda/ops_cuda.h"
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void dump(const char *prefix, const char *ext, const void *p, size_t bytes) {
    char path[1024];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, bytes, f) != bytes || fclose(f) != 0) {
        fprintf(stderr, "bench_encoder: cannot write %s\n", path);
        exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODEL_DIR score|embed T B REPS fp32|bf16 [DUMP_PREFIX]\n", argv[0]);
        return 2;
    }
#ifndef XR_HAVE_CUDA
    fprintf(stderr, "bench_encoder: built without the CUDA backend\n");
    return 77;
#else
    const char *dir = argv[1];
    int score = !strcmp(argv[2], "score"), T = atoi(argv[3]), B = atoi(argv[4]), reps = atoi(argv[5]);
    int bf16 = !strcmp(argv[6], "bf16");
    if (T < 3 || B < 1 || reps < 1) {
        fprintf(stderr, "bench_encoder: bad T / B / REPS\n");
        return 2;
    }
    if (cuda_ops_device_count() < 1) {
        fprintf(stderr, "bench_encoder: no GPU visible\n");
        return 77;
    }
    Backend *be = cuda_ops_backend(0);
    cuda_ops_set_gemm_mode(be, bf16 ? XR_GEMM_BF16 : XR_GEMM_FP32);
    XrErr e;
    double t0 = now();
    Encoder *m = encoder_load_on(dir, be, &e);
    if (!m) {
        fprintf(stderr, "bench_encoder: %s\n", e.msg);
        return 1;
    }
    double t_load = now() - t0;
    /* the activation storage the forward will use (XR_CUDA_ACT_PACK=1 in bf16 mode: 2, packed bf16), asked the way
     * the model asks, so a row says what it timed */
    int act_bytes = ops_act_pack(be, 1);
    ops_act_pack(be, 0);
    const ModelConfig *c = encoder_config(m);
    /* the peer's batch: ids in [5, 1000), <s> first and </s> last, no padding */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *mask = malloc(sizeof(int32_t) * (size_t)B * T);
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < (size_t)B * T; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        ids[i] = 5 + (int32_t)(r % 995);
        mask[i] = 1;
    }
    for (int b = 0; b < B; b++) ids[(size_t)b * T] = 0, ids[(size_t)b * T + T - 1] = 2;
    Batch batch = {B, T, ids, NULL, mask};
    size_t nout = score ? (size_t)B * (c->num_labels > 0 ? c->num_labels : 1) : (size_t)B * c->hidden;
    float *out = malloc(nout * sizeof(float));
    PoolingMode pool = c->has_pooling_config ? c->pooling : POOL_CLS;
    int norm = c->has_pooling_config ? c->normalize : 1;
#define XR_RUN() (score ? encoder_forward_score(m, &batch, out) : encoder_forward_embed(m, &batch, pool, norm, out))
    XR_RUN(); /* warm-up: workspace, scratch, cuBLAS heuristics */
    if (argc > 7) {
        dump(argv[7], "ids.i32", ids, sizeof(int32_t) * (size_t)B * T);
        dump(argv[7], "out.f32", out, nout * sizeof(float));
    }
    XR_RUN();
    t0 = now();
    for (int i = 0; i < reps; i++) XR_RUN(); /* outputs come back to the host: each call ends synchronised */
    double dt = now() - t0;
    char pooled[64] = ""; /* what embed computed, as bench_embed_torch.py prints it */
    if (!score)
        snprintf(pooled, sizeof pooled, ", \"pooling\": \"%s\", \"normalize\": %d", pool == POOL_MEAN ? "mean" : "cls",
                 norm);
    /* packed_fallbacks: the run's packed linears (warm-up and reps) that found no cuBLASLt algorithm for a bf16 output
     * and took the fp32 GEMM + bias-and-round kernel (0 expected at these shapes; 0 too when not packed) */
    printf("{\"kind\": \"xrank_infer\", \"task\": \"%s\", \"precision\": \"%s\", \"max_len\": %d, \"batch\": %d, "
           "\"reps\": %d, \"ms_per_batch\": %.2f, \"seqs_per_s\": %.1f, \"load_s\": %.2f, \"params\": %lld, "
           "\"act_bytes\": %d, \"packed_fallbacks\": %llu%s}\n",
           score ? "score" : "embed", bf16 ? "bf16" : "fp32", T, B, reps, 1e3 * dt / reps, B * reps / dt, t_load,
           (long long)encoder_num_params(m), act_bytes, cuda_ops_packed_fallbacks(be), pooled);
    encoder_free(m);
    cuda_ops_backend_free(be);
    free(ids), free(mask), free(out);
    return 0;
#endif
}
