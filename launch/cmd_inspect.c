/* cmd_inspect.c: `xrank inspect PATH`: says what a file or directory is (dataset directory / index.h5, token
 * store shard, other HDF5 such as group files, safetensors, HF model directory) with counts, token length
 * statistics and tokenizer, and checks it without trusting it: offsets, token ids against the vocabulary,
 * shard table against the shards, qrels / negatives / labels against the stores. Exit 1 when a check fails. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt.h"
#include "cli.h"
#include "cli_common.h"
#include "dataset.h"
#include "groups.h"
#include "h5store.h"
#include "hfmodel.h"
#include "safetensors.h"
#include "tokenizer.h"

static const ArgSpec INSPECT_FLAGS[] = {
    {"model", ARG_STR, NULL, "DIR|ID",
     "check that token stores were made with this model's tokenizer (fingerprint); --show prints its pieces", NULL, 0},
    {"show", ARG_INT, "0", "N", "print the first N rows of each token store (id, token ids, pieces with --model)",
     NULL, 0},
    CLI_FLAG_CONFIG("JSON file of flag values"),
};
#define NFLAGS ((int)(sizeof INSPECT_FLAGS / sizeof INSPECT_FLAGS[0]))

static const ArgHelp INSPECT_HELP = {
    "Describe and check an xrank dataset, token store, HDF5 file, safetensors file or model directory.",
    "PATH is a dataset directory (index.h5 + shards) or its index.h5, one shard file, a group file (xrank mine),\n"
    "any other HDF5 file\n"
    "(listed like h5ls -r), a .safetensors file or a Hugging Face model directory. Every HDF5 file's checksum\n"
    "record (crc32 of its bytes) is checked before libhdf5 reads it: a damaged file is refused and named.\n"
    "For token stores it prints\n"
    "rows, tokens, shards, tokens per row (min / median / p99 / max) and the tokenizer, and checks offsets\n"
    "(start at 0, never go back, end at the token count), token ids (inside the vocabulary), the index's\n"
    "shard table against each shard, and qrels / negatives / labels (pointing at existing rows). Every\n"
    "problem is listed; the exit status is 1 when there is one.",
    "  xrank inspect scifact.h5d\n  xrank inspect scifact.h5d/passages-00000.h5 --show 3 --model ./minilm\n"
    "  xrank inspect ./minilm/model.safetensors",
};

typedef struct {
    int nproblems;
    Tokenizer *tok; /* --model */
    char fingerprint[32];
    int show;
    int sum_ok, sum_none; /* HDF5 files whose checksum record was verified / that have none */
    uint64_t sum_bytes;
    uint32_t sum_crc; /* of the last one verified */
} Insp;

static void problem(Insp *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(Insp *in, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  PROBLEM: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    in->nproblems++;
}

/* The checksum record of an HDF5 file, checked before libhdf5 reads it (io/h5sum.c); counted for the summary line.
 * -1 (a problem reported) when the file is refused: nothing more of it may be read. */
static int check_sum(Insp *in, const char *path) {
    H5SumCheck c;
    XrErr e = {{0}};
    H5SumState st = h5_verify(path, &c, &e);
    if (st == H5SUM_DAMAGED || st == H5SUM_NOT_HDF5) {
        problem(in, "%s", e.msg);
        return -1;
    }
    if (st == H5SUM_NONE) {
        in->sum_none++;
    } else {
        in->sum_ok++;
        in->sum_bytes += c.covered;
        in->sum_crc = c.crc32;
    }
    return 0;
}

static void print_sums(const Insp *in) {
    int n = in->sum_ok + in->sum_none;
    if (in->sum_ok == 1 && n == 1)
        printf("  checksum: crc32 %08x of %llu bytes verified before reading\n", in->sum_crc,
               (unsigned long long)in->sum_bytes);
    else if (in->sum_ok)
        printf("  checksums: %d of %d files verified before reading (crc32 of %llu bytes)\n", in->sum_ok, n,
               (unsigned long long)in->sum_bytes);
    if (in->sum_none == n && n)
        printf("  checksum: none (written before xrank sealed its HDF5 files): checked by structure only\n");
    else if (in->sum_none)
        printf("  checksums: %d file%s without one (written before xrank sealed its HDF5 files): checked by structure "
               "only\n", in->sum_none, in->sum_none == 1 ? "" : "s");
}

/* Every attribute of an HDF5 file read without trusting it (h5dump -A fails on a damaged one; so do we). */
static void check_attrs(Insp *in, const char *path) {
    XrErr e = {{0}};
    int bad = h5_check_attrs(path, &e);
    if (bad) problem(in, "%s%s", e.msg, bad > 1 ? " (and more damaged attributes)" : "");
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void print_lengths(const int64_t *lens, int64_t n) {
    if (n == 0) {
        printf("    tokens per row: (no rows)\n");
        return;
    }
    int64_t *s = xr_malloc(sizeof(int64_t) * (size_t)n);
    memcpy(s, lens, sizeof(int64_t) * (size_t)n);
    qsort(s, (size_t)n, sizeof *s, cmp_i64);
    double sum = 0;
    int64_t zero = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)s[i], zero += s[i] == 0;
    int64_t p99 = (int64_t)ceil(0.99 * (double)n) - 1;
    printf("    tokens per row: min %lld, median %lld, mean %.1f, p99 %lld, max %lld%s", (long long)s[0],
           (long long)s[(n - 1) / 2], sum / (double)n, (long long)s[p99 < 0 ? 0 : p99], (long long)s[n - 1],
           zero ? "" : "\n");
    if (zero) printf("; %lld empty rows\n", (long long)zero);
    free(s);
}

static void check_tokenizer(Insp *in, const char *kind, const char *fp, const char *where) {
    if (in->tok && strcmp(fp, in->fingerprint))
        problem(in, "%s was tokenized with %s %s, but --model's tokenizer is %s", where, kind, fp, in->fingerprint);
}

/* The first rows of a store, decoded into pieces when a tokenizer is at hand. */
static void show_rows(Insp *in, const char *path, const char *name) {
    if (in->show <= 0) return;
    XrErr e;
    TokenStore *s = h5store_open(path, name, &e);
    if (!s) {
        printf("    (cannot show rows: %s)\n", e.msg);
        return;
    }
    int64_t n = h5store_rows(s) < in->show ? h5store_rows(s) : in->show;
    TokBatch b = {0};
    char **ids = h5store_read_ids(s, 0, n, &e);
    if (ids && h5store_read_range(s, 0, n, &b, &e) == 0) {
        for (int64_t i = 0; i < n; i++) {
            printf("    [%lld] id %s, %lld tokens:", (long long)i, ids[i], (long long)(b.offsets[i + 1] - b.offsets[i]));
            for (int64_t k = b.offsets[i]; k < b.offsets[i + 1]; k++) printf(" %d", b.tokens[k]);
            printf("\n");
            if (in->tok) {
                printf("        ");
                for (int64_t k = b.offsets[i]; k < b.offsets[i + 1]; k++) {
                    const char *p = tok_id_to_piece(in->tok, b.tokens[k]);
                    printf("%s%s", k > b.offsets[i] ? " " : "", p ? p : "<?>");
                }
                printf("\n");
            }
        }
    } else {
        printf("    (cannot show rows: %s)\n", e.msg);
    }
    free(ids);
    tokbatch_free(&b);
    h5store_close(s);
}

/* Scan one store: every shard listed (files relative to dir), checked against the table; rows per shard
 * come back in *nrows. */
static void inspect_store(Insp *in, const char *dir, const char *index_path, const char *name, const char *fp,
                          int64_t *nrows) {
    char **files = NULL;
    int64_t *row_off = NULL, index_tokens = 0;
    int ns = 0;
    XrErr e;
    *nrows = 0;
    if (h5store_index_shards(index_path, name, &files, &row_off, &ns, &index_tokens, &e) < 0) {
        problem(in, "%s", e.msg);
        return;
    }
    int64_t total = row_off[ns], ntok = 0, oob = 0;
    int64_t *lens = xr_calloc((size_t)(total > 0 ? total : 1), sizeof(int64_t));
    int64_t tmin = INT64_MAX, tmax = INT64_MIN, vocab = 0, cap = 0;
    char kind[64] = "";
    for (int k = 0; k < ns; k++) {
        char *p = xr_path_join(dir, files[k]);
        ShardScan s;
        if (check_sum(in, p) < 0) { /* refused: libhdf5 must not parse it */
            free(p);
            continue;
        }
        check_attrs(in, p);
        if (h5store_scan_shard(p, name, &s, &e) < 0) {
            problem(in, "%s", e.msg);
            free(p);
            continue;
        }
        for (int i = 0; i < s.nproblems && i < 8; i++) problem(in, "%s: %s", files[k], s.problems[i]);
        if (s.nproblems > 8) problem(in, "%s: %d more problems", files[k], s.nproblems - 8);
        if (s.row_start != row_off[k] || s.rows != row_off[k + 1] - row_off[k])
            problem(in, "%s holds rows [%lld, %lld) but index.h5 lists [%lld, %lld)", files[k],
                    (long long)s.row_start, (long long)(s.row_start + s.rows), (long long)row_off[k],
                    (long long)row_off[k + 1]);
        if (s.shard_index != k || s.num_shards != ns || s.num_rows_total != total)
            problem(in, "%s says shard %lld of %lld (%lld rows in all), index.h5 says shard %d of %d (%lld rows)",
                    files[k], (long long)s.shard_index, (long long)s.num_shards, (long long)s.num_rows_total, k, ns,
                    (long long)total);
        if (strcmp(s.fingerprint, fp))
            problem(in, "%s: tokenizer fingerprint %s differs from index.h5's %s", files[k], s.fingerprint, fp);
        for (int64_t r = 0; r < s.rows && row_off[k] + r < total; r++)
            if (row_off[k] + r >= 0) lens[row_off[k] + r] = s.lens[r];
        ntok += s.ntok;
        oob += s.tok_out_of_range;
        if (s.ntok) tmin = s.tok_min < tmin ? s.tok_min : tmin, tmax = s.tok_max > tmax ? s.tok_max : tmax;
        vocab = s.vocab_size, cap = s.max_tokens;
        snprintf(kind, sizeof kind, "%s", s.kind);
        free(s.lens);
        free(p);
    }
    if (ntok != index_tokens)
        problem(in, "/%s: the shards hold %lld tokens, index.h5 says %lld", name, (long long)ntok,
                (long long)index_tokens);
    printf("  %s: %lld rows, %lld tokens in %d shard%s", name, (long long)total, (long long)ntok, ns, ns == 1 ? "" : "s");
    if (cap) printf(", cut at %lld tokens", (long long)cap);
    printf("\n");
    print_lengths(lens, total);
    if (ntok) printf("    token ids in [%lld, %lld], vocabulary %lld%s\n", (long long)tmin, (long long)tmax, (long long)vocab,
                     oob ? " (some outside!)" : "");
    check_tokenizer(in, kind, fp, name);
    free(lens);
    free(files);
    free(row_off);
    *nrows = total;
}

static void check_triples(Insp *in, const char *what, int64_t n, const int64_t *q, const int64_t *p, int64_t nq,
                          int64_t np) {
    int64_t bq = 0, bp = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        int bad = 0;
        if (q[i] < 0 || q[i] >= nq) bq++, bad = 1;
        if (p[i] < 0 || p[i] >= np) bp++, bad = 1;
        if (bad && first < 0) first = i;
    }
    if (bq || bp)
        problem(in, "%s: %lld dangling (%lld query and %lld passage indices out of range; first at [%lld]: query %lld, "
                    "passage %lld; the stores hold %lld queries, %lld passages)",
                what, (long long)(bq > bp ? bq : bp), (long long)bq, (long long)bp, (long long)first,
                (long long)q[first], (long long)p[first], (long long)nq, (long long)np);
    /* mine, train and eval rely on each query's entries being one run (docs/FORMATS.md) */
    for (int64_t i = 1; i < n; i++)
        if (q[i] < q[i - 1]) {
            problem(in, "%s: not sorted by query: [%lld] is query %lld after query %lld", what, (long long)i,
                    (long long)q[i], (long long)q[i - 1]);
            break;
        }
}

static int inspect_dataset(Insp *in, const char *index_path) {
    char *copy = xr_strdup(index_path);
    char *slash = strrchr(copy, '/');
    const char *dir = ".";
    if (slash) *slash = 0, dir = copy;
    XrErr e;
    DsIndex ix;
    if (check_sum(in, index_path) < 0) {
        printf("%s: refused before libhdf5 read it\n", index_path);
        free(copy);
        return 1;
    }
    check_attrs(in, index_path);
    if (ds_read_index_unchecked(index_path, &ix, &e) < 0) {
        printf("%s: xrank dataset index\n", index_path);
        problem(in, "%s", e.msg);
        free(copy);
        return 1;
    }
    printf("%s: xrank dataset (format %lld), %s data\n", dir, (long long)ix.format_version, ix.source_format);
    printf("  tokenizer: %s %s, vocabulary %lld\n", ix.tokenizer_kind, ix.tokenizer_fingerprint,
           (long long)ix.vocab_size);
    int64_t nq, np;
    inspect_store(in, dir, index_path, "queries", ix.tokenizer_fingerprint, &nq);
    show_rows(in, dir, "queries");
    inspect_store(in, dir, index_path, "passages", ix.tokenizer_fingerprint, &np);
    show_rows(in, dir, "passages");
    if (nq != ix.num_queries || np != ix.num_passages)
        problem(in, "index.h5 counts %lld queries / %lld passages, the shard tables %lld / %lld",
                (long long)ix.num_queries, (long long)ix.num_passages, (long long)nq, (long long)np);
    /* qrels: grades, queries covered */
    int64_t hist[5] = {0}, other = 0, covered = 0;
    for (int64_t i = 0; i < ix.nqrels; i++) {
        int g = ix.qrel_grade[i];
        if (g >= 0 && g < 5)
            hist[g]++;
        else
            other++;
        if (i == 0 || ix.qrel_query[i] != ix.qrel_query[i - 1]) covered++;
    }
    printf("  qrels: %lld for %lld queries; grade 0: %lld, 1: %lld, 2: %lld, 3: %lld, 4: %lld, other: %lld%s\n",
           (long long)ix.nqrels, (long long)covered, (long long)hist[0], (long long)hist[1], (long long)hist[2],
           (long long)hist[3], (long long)hist[4], (long long)other, ix.qrel_score ? "; with scores" : "");
    printf("  negatives: %lld%s; labels: %lld\n", (long long)ix.nneg, ix.neg_score ? " with scores" : "",
           (long long)ix.nlab);
    check_triples(in, "qrels", ix.nqrels, ix.qrel_query, ix.qrel_passage, nq, np);
    check_triples(in, "negatives", ix.nneg, ix.neg_query, ix.neg_passage, nq, np);
    check_triples(in, "labels", ix.nlab, ix.lab_query, ix.lab_passage, nq, np);
    print_sums(in);
    ds_index_free(&ix);
    free(copy);
    return 0;
}

/* A shard opened alone. */
static int inspect_shard(Insp *in, const char *path) {
    XrErr e;
    ShardScan s;
    const char *name = "passages";
    if (check_sum(in, path) < 0) return 1; /* h5_file_format refused it first: not reached */
    check_attrs(in, path);
    if (h5store_scan_shard(path, name, &s, &e) < 0) {
        name = "queries";
        if (h5store_scan_shard(path, name, &s, &e) < 0) {
            printf("%s: xrank token store shard\n", path);
            problem(in, "%s", e.msg);
            return 1;
        }
    }
    printf("%s: xrank token store shard: /%s, shard %lld of %lld, rows [%lld, %lld) of %lld\n", path, name,
           (long long)s.shard_index, (long long)s.num_shards, (long long)s.row_start, (long long)(s.row_start + s.rows),
           (long long)s.num_rows_total);
    printf("  tokenizer: %s %s, vocabulary %lld\n", s.kind, s.fingerprint, (long long)s.vocab_size);
    printf("  %s: %lld rows, %lld tokens\n", name, (long long)s.rows, (long long)s.ntok);
    print_lengths(s.lens, s.rows);
    if (s.ntok) printf("    token ids in [%lld, %lld]\n", (long long)s.tok_min, (long long)s.tok_max);
    for (int i = 0; i < s.nproblems && i < 8; i++) problem(in, "%s", s.problems[i]);
    if (s.nproblems > 8) problem(in, "%d more problems", s.nproblems - 8);
    check_tokenizer(in, s.kind, s.fingerprint, path);
    free(s.lens);
    print_sums(in);
    if (s.nproblems == 0) show_rows(in, path, name);
    return 0;
}

static int inspect_safetensors(Insp *in, const char *path) {
    SafeTensors st;
    XrErr e;
    if (st_open(&st, path, &e) < 0) {
        printf("%s: safetensors file\n", path);
        problem(in, "%s", e.msg);
        return 1;
    }
    int64_t per[16] = {0}, total = 0;
    for (int i = 0; i < st.n; i++) {
        per[st.tensors[i].dtype] += st_numel(&st.tensors[i]);
        total += st_numel(&st.tensors[i]);
    }
    printf("%s: safetensors, %d tensors, %lld parameters (%.1f MB)", path, st.n, (long long)total, st.map_len / 1e6);
    for (int d = 0; d < 16; d++)
        if (per[d]) printf(", %s %lld", st_dtype_name((StDtype)d), (long long)per[d]);
    printf("\n  metadata: %s\n", st.metadata_json ? st.metadata_json : "(none)");
    for (int i = 0; i < st.n && i < 12; i++) {
        const StTensor *t = &st.tensors[i];
        printf("  %-60s %-4s [", t->name, st_dtype_name(t->dtype));
        for (int k = 0; k < t->ndim; k++) printf("%s%lld", k ? ", " : "", (long long)t->shape[k]);
        printf("]\n");
    }
    if (st.n > 12) printf("  ... %d more\n", st.n - 12);
    st_close(&st);
    return 0;
}

/* A group file (xrank mine): counts and how it was mined; groups_read checks every index and shape. */
static int inspect_groups(Insp *in, const char *path) {
    GroupSet g;
    XrErr e;
    printf("%s: xrank group file (format %d)\n", path, GROUPS_FORMAT_VERSION);
    if (check_sum(in, path) < 0) return 1; /* h5_file_format refused it first: not reached */
    check_attrs(in, path);
    if (groups_read(path, &g, &e)) {
        problem(in, "%s", e.msg);
        return 1;
    }
    int64_t filled = 0, queries = 0;
    for (int64_t r = 0; r < g.n; r++) {
        filled += groups_row_negatives(&g, r);
        queries += r == 0 || g.query[r] != g.query[r - 1];
    }
    printf("  %lld rows (query, positive) over %lld queries, %d negative slots per row, %lld filled (%.1f per row)\n",
           (long long)g.n, (long long)queries, g.k, (long long)filled, g.n ? (double)filled / (double)g.n : 0.0);
    printf("  dataset %s: %lld queries, %lld passages, tokenizer %s\n", g.dataset[0] ? g.dataset : "(not recorded)",
           (long long)g.num_queries, (long long)g.num_passages, g.tokenizer_fingerprint);
    printf("  cross-encoder scores: %s\n", g.ce_scores ? "yes" : "no");
    if (g.meta_json) printf("  mined with: %s\n", g.meta_json);
    print_sums(in);
    groups_free(&g);
    return 0;
}

static int inspect_path(Insp *in, const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "xrank inspect: error: %s: no such file or directory\n", path);
        return 2;
    }
    if (S_ISDIR(sb.st_mode)) {
        char *ix = xr_path_join(path, H5STORE_INDEX_FILE), *st = xr_path_join(path, "model.safetensors");
        char *cfg = xr_path_join(path, "config.json");
        int rc;
        if (ckpt_is_checkpoint(path)) { /* a training checkpoint: its files checked against the manifest first */
            CkptManifest cm;
            XrErr e;
            if (ckpt_open(path, &cm, 1, &e)) {
                problem(in, "%s", e.msg);
                free(ix), free(st), free(cfg);
                return 1;
            }
            printf("%s: xrank checkpoint (format %d): step %lld of %lld (epoch %lld, position %lld), %d rank%s x "
                   "accumulation %d, global batch %lld, %d optimizer shard%s, %d files checked (size, crc32)\n",
                   path, cm.version, (long long)cm.step, (long long)cm.total_steps, (long long)cm.epoch,
                   (long long)cm.epoch_pos, cm.world_size, cm.world_size > 1 ? "s" : "", cm.accumulation,
                   (long long)cm.global_batch, cm.nshards, cm.nshards > 1 ? "s" : "", cm.nfiles);
            ckpt_manifest_free(&cm);
        }
        if (xr_file_exists(ix)) {
            rc = inspect_dataset(in, ix);
        } else if (xr_file_exists(cfg)) {
            ModelConfig mc;
            XrErr e;
            if (hf_load_config(path, &mc, &e) == 0)
                printf("%s: Hugging Face model directory: %s (%s), hidden %d, %d layers, %d heads, vocabulary %d\n",
                       path, mc.architecture, mc.model_type, mc.hidden, mc.layers, mc.heads, mc.vocab_size);
            else
                problem(in, "%s", e.msg);
            /* score, train and eval need the tokenizer: a model directory without one is not usable */
            Tokenizer *tok = tok_load(path, &e);
            if (tok) {
                DsTokInfo ti;
                ds_tok_info(tok, &ti);
                printf("  tokenizer: %s %s\n", ti.kind, ti.fingerprint);
                tok_free(tok);
            } else {
                problem(in, "%s", e.msg);
            }
            rc = xr_file_exists(st) ? inspect_safetensors(in, st) : 0;
        } else {
            fprintf(stderr, "xrank inspect: error: %s: a directory without %s or config.json: not a dataset or model "
                            "directory xrank knows\n",
                    path, H5STORE_INDEX_FILE);
            rc = 2;
        }
        free(ix), free(st), free(cfg);
        return rc;
    }
    char fmt[64];
    XrErr fe = {{0}};
    int h = h5_file_format(path, fmt, sizeof fmt, &fe); /* checks the checksum record first */
    if (h == -3) {
        printf("%s: refused before libhdf5 read it\n", path);
        problem(in, "%s", fe.msg);
        return 1;
    }
    if (h == -2) {
        printf("%s: HDF5 file\n", path);
        problem(in, "%s", fe.msg);
        check_attrs(in, path);
        return 1;
    }
    if (h == 1) {
        if (!strcmp(fmt, H5STORE_INDEX_FORMAT)) return inspect_dataset(in, path);
        if (!strcmp(fmt, H5STORE_SHARD_FORMAT)) return inspect_shard(in, path);
        if (!strcmp(fmt, GROUPS_FORMAT)) return inspect_groups(in, path);
        printf("%s: HDF5 file%s%s%s\n", path, fmt[0] ? " (xrank_format \"" : " (not written by xrank)", fmt,
               fmt[0] ? "\", not one this version reads)" : "");
        XrErr e;
        if (check_sum(in, path) == 0 && h5_list(path, stdout, &e) < 0) problem(in, "%s", e.msg);
        check_attrs(in, path);
        print_sums(in);
        return 0;
    }
    FILE *f = fopen(path, "rb");
    unsigned char head[9] = {0};
    size_t got = f ? fread(head, 1, 9, f) : 0;
    if (f) fclose(f);
    if (got == 9 && head[8] == '{') return inspect_safetensors(in, path);
    fprintf(stderr, "xrank inspect: error: %s: not a file xrank knows (HDF5 dataset / token store, safetensors)\n", path);
    return 2;
}

const CliCmd CLI_CMD_INSPECT = {"inspect", INSPECT_FLAGS, NFLAGS, &INSPECT_HELP, 1, NULL, 0, NULL};

int cmd_inspect(int argc, char **argv) {
    CliBase b;
    int pr = cli_start(&b, &CLI_CMD_INSPECT, 1, argc, argv);
    if (pr >= 0) return pr;
    XrErr e = {{0}};
    const Args *a = &b.args;
    if (a->npositional != 1) {
        xr_errf(&e, "give one PATH to inspect (xrank inspect --help)");
        return cli_fail_base(&b, &e, 2);
    }
    Insp in = {.show = (int)args_int(a, "show")};
    const char *model = args_str(a, "model");
    if (model) {
        char *dir = hf_resolve_model(model, &e);
        in.tok = dir ? tok_load(dir, &e) : NULL;
        free(dir);
        if (!in.tok) return cli_fail_base(&b, &e, 2);
        DsTokInfo ti;
        ds_tok_info(in.tok, &ti);
        snprintf(in.fingerprint, sizeof in.fingerprint, "%s", ti.fingerprint);
    }
    int rc = inspect_path(&in, a->positional[0]);
    if (rc == 0 || rc == 1) {
        if (in.nproblems)
            printf("%d problem%s found\n", in.nproblems, in.nproblems == 1 ? "" : "s");
        else
            printf("checks passed\n");
        rc = in.nproblems ? 1 : 0;
    }
    if (in.tok) tok_free(in.tok);
    return cli_end(&b, rc);
}
