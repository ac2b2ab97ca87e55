/* bench_zero_memory.c: optimizer memory per rank with and without ZeRO-1 (dist/gradsync.h's
 * gsync_optimizer_bytes, the figure `xrank train` prints) for a model shape read from a config.json alone (no
 * weights needed): parameters counted as core/model_load.c lays them out for a *ForSequenceClassification model with
 * one label (embeddings + LayerNorm, per layer QKV / output / 2 LayerNorms / FFN, XLM-R's dense + out_proj head or
 * BERT's pooler + classifier). Prints a markdown table for 1, 2, 4 and 8 ranks.
 * Usage: bench_zero_memory MODEL_DIR_WITH_CONFIG_JSON */
#include <stdio.h>

#include "gradsync.h"
#include "hfmodel.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench_zero_memory DIR (holding config.json)\n");
        return 2;
    }
    ModelConfig c;
    XrErr e;
    if (hf_load_config(argv[1], &c, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    int64_t H = c.hidden, I = c.intermediate;
    int64_t emb = (int64_t)c.vocab_size * H + (int64_t)c.max_pos * H + (int64_t)c.type_vocab * H + 2 * H;
    int64_t layer = 3 * H * H + 3 * H + H * H + H + 2 * H + I * H + I + H * I + H + 2 * H;
    int64_t head = H * H + H + H + 1; /* dense (or pooler) + out_proj (or classifier), one label */
    int64_t n = emb + (int64_t)c.layers * layer + head;
    double mib = 1048576.0;
    printf("%s: %lld parameters (%.1f MiB fp32; word embeddings %.1f%%), gradients %.1f MiB per rank (not sharded)\n\n",
           argv[1], (long long)n, (double)n * 4 / mib, 100.0 * (double)c.vocab_size * (double)H / (double)n,
           (double)n * 4 / mib);
    printf("| ranks | AdamW moments per rank, ZeRO off | ZeRO-1 | + fp32 master weights (bf16 GPU), ZeRO off | ZeRO-1 |\n");
    printf("|---|---|---|---|---|\n");
    for (int R = 1; R <= 8; R *= 2)
        printf("| %d | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB |\n", R, (double)gsync_optimizer_bytes(n, R, 0, 0) / mib,
               (double)gsync_optimizer_bytes(n, R, 1, 0) / mib, (double)gsync_optimizer_bytes(n, R, 0, 1) / mib,
               (double)gsync_optimizer_bytes(n, R, 1, 1) / mib);
    return 0;
}
