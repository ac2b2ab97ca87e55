/* xrank.c: the CLI entry point: dispatches `xrank <command>` to launch/cmd_<command>.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const CliCommand COMMANDS[] = {
    {"score", cmd_score, "score query-passage pairs with a cross-encoder (jsonl in, scores out)"},
    {"embed", cmd_embed, "embed texts with a bi-encoder (jsonl or text in, jsonl or .npy out)"},
    {"tokenize", cmd_tokenize, "text (BEIR, pairs, FlagEmbedding) -> HDF5 token stores + qrels"},
    {"mine", cmd_mine, "hard-negative mining with a bi-encoder over a tokenized dataset -> HDF5 training groups"},
    {"train", cmd_train, "data-parallel cross-encoder fine-tuning (bce or listwise) -> HF model dirs + metrics.jsonl"},
    {"export", cmd_export, "a training checkpoint -> a Hugging Face / sentence-transformers CrossEncoder directory"},
    {"eval", cmd_eval, "rerank candidates with a cross-encoder: MRR@10, NDCG@10, MAP, Recall (base vs reranked)"},
    {"plot", cmd_plot, "a training run's loss, learning rate, evaluation metrics and throughput as PNG + SVG (cairo)"},
    {"inspect", cmd_inspect, "describe and check a dataset, token store, HDF5 or safetensors file"},
    {"version", cmd_version, "print the version and the backends compiled in"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: xrank <command> [options]   (xrank <command> --help for its options; xrank --version)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) return cmd_version(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
        if (!strcmp(argv[1], COMMANDS[i].name)) return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "xrank: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
