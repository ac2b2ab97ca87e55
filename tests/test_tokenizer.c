/* test_tokenizer.c: the C tokenizers against Hugging Face's fast tokenizers, from the fixtures written by
 * gen_tokenizer_fixtures.py: ids of ~2,200 real and edge-case strings per tokenizer (BERT uncased and cased
 * on the all-MiniLM-L6-v2 vocab, an XLM-R-style spm model), pair templates with longest_first truncation, a
 * length grid, HF's BERT normalizer + pre-tokenizer on every code point, load errors, and a speed print. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "tok_internal.h"
#include "tokenizer.h"

typedef struct {
    char **s;
    size_t *n;
    int count;
} Lines;

static char *slurp(const char *rel, size_t *n) {
    XrErr e;
    char *b = xr_read_file(tu_path(rel), n, &e);
    if (!b) xr_die("%s", e.msg);
    return b;
}

/* Split a file into lines (modifies buf). */
static Lines split_lines(char *buf, size_t n) {
    Lines L = {0};
    int cap = 1024;
    L.s = xr_malloc(sizeof(char *) * (size_t)cap);
    size_t i = 0;
    while (i < n) {
        char *e = memchr(buf + i, '\n', n - i);
        size_t end = e ? (size_t)(e - buf) : n;
        buf[end] = 0;
        if (L.count == cap) L.s = xr_realloc(L.s, sizeof(char *) * (size_t)(cap *= 2));
        L.s[L.count++] = buf + i;
        i = end + 1;
    }
    return L;
}

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

/* inputs.txt escapes: \\ and \xNN; everything else is literal bytes. */
static Lines read_inputs(void) {
    size_t n;
    char *buf = slurp("fixtures/tok/inputs.txt", &n);
    Lines L = split_lines(buf, n);
    L.n = xr_malloc(sizeof(size_t) * (size_t)L.count);
    for (int k = 0; k < L.count; k++) {
        char *s = L.s[k], *o = s;
        for (; *s; s++) {
            if (*s == '\\' && s[1] == '\\') {
                *o++ = '\\';
                s++;
            } else if (*s == '\\' && s[1] == 'x') {
                *o++ = (char)(hexval(s[2]) * 16 + hexval(s[3]));
                s += 3;
            } else
                *o++ = *s;
        }
        L.n[k] = (size_t)(o - L.s[k]);
    }
    return L;
}

static int parse_ids(const char *s, int32_t *out, int cap) {
    int k = 0;
    char *end;
    for (;;) {
        while (*s == ' ') s++;
        if (!*s || *s == '\t') break;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        if (k < cap) out[k] = (int32_t)v;
        k++;
        s = end;
    }
    return k;
}

static void show_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "  %s (%d):", what, n);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

typedef struct {
    int32_t **ids; /* per input */
    int *n;
    int count;
} Encoded;

static void encoded_free(Encoded *E) {
    for (int k = 0; k < E->count; k++) free(E->ids[k]);
    free(E->ids);
    free(E->n);
}

/* tok_encode on every input against the expected ids file; returns the encodings for the pair tests. */
static Encoded check_ids(const char *name, const Tokenizer *t, const Lines *in, const char *ids_rel) {
    size_t n;
    char *buf = slurp(ids_rel, &n);
    Lines exp = split_lines(buf, n);
    TU_CHECK(exp.count == in->count, "%s: %d expected lines for %d inputs", name, exp.count, in->count);
    Encoded E = {xr_calloc((size_t)in->count, sizeof(int32_t *)), xr_calloc((size_t)in->count, sizeof(int)),
                 in->count};
    int32_t *want = xr_malloc(sizeof(int32_t) * 65536), *got = NULL;
    size_t cap = 0;
    int bad = 0;
    for (int k = 0; k < in->count && k < exp.count; k++) {
        int nw = parse_ids(exp.s[k], want, 65536);
        int ng = tok_encode(t, in->s[k], in->n[k], &got, &cap);
        E.ids[k] = xr_malloc(sizeof(int32_t) * (size_t)(ng + 1));
        if (ng) memcpy(E.ids[k], got, sizeof(int32_t) * (size_t)ng);
        E.n[k] = ng;
        if (ng != nw || (ng && memcmp(got, want, sizeof(int32_t) * (size_t)ng) != 0)) {
            if (++bad <= 5) {
                fprintf(stderr, "%s: input %d (%zu bytes) differs from HF: \"%.*s\"\n", name, k, in->n[k],
                        (int)(in->n[k] < 120 ? in->n[k] : 120), in->s[k]);
                int d = 0;
                while (d < nw && d < ng && want[d] == got[d]) d++;
                int from = d > 5 ? d - 5 : 0;
                fprintf(stderr, "  first difference at id %d:\n", d);
                show_ids("want", want + from, nw - from);
                show_ids("got ", got + from, ng - from);
            }
        }
    }
    TU_CHECK(bad == 0, "%s: %d of %d strings differ from HF", name, bad, in->count);
    printf("%s: %d strings, %d mismatches\n", name, in->count, bad);
    free(want);
    free(got);
    free(exp.s);
    free(buf);
    return E;
}

/* "ia ib L\tids\ttypes": tok_pair (ib >= 0) or tok_single against the HF template + truncation. */
static void check_pairs(const char *name, const Tokenizer *t, const Encoded *E, const char *rel) {
    size_t n;
    char *buf = slurp(rel, &n);
    Lines L = split_lines(buf, n);
    int32_t want[4096], got[4096], gtypes[4096];
    int bad = 0;
    for (int k = 0; k < L.count; k++) {
        int ia, ib, ml;
        if (sscanf(L.s[k], "%d %d %d", &ia, &ib, &ml) != 3) xr_die("%s:%d: bad line", rel, k + 1);
        char *p = strchr(L.s[k], '\t');
        int nw = parse_ids(p + 1, want, 4096);
        const char *types = strchr(p + 1, '\t') + 1;
        int ng = ib >= 0 ? tok_pair(t, E->ids[ia], E->n[ia], E->ids[ib], E->n[ib], ml, got, gtypes)
                         : tok_single(t, E->ids[ia], E->n[ia], ml, got, gtypes);
        int ok = ng == nw && memcmp(got, want, sizeof(int32_t) * (size_t)ng) == 0 && (int)strlen(types) == nw;
        for (int i = 0; ok && i < ng; i++) ok = gtypes[i] == types[i] - '0';
        ok = ok && ng == tok_seq_len(t, E->n[ia], ib >= 0 ? E->n[ib] : -1, ml);
        if (!ok && ++bad <= 5) {
            fprintf(stderr, "%s: %s line %d (a=%d b=%d max_len=%d) differs\n", name, rel, k + 1, ia, ib, ml);
            show_ids("want", want, nw);
            show_ids("got ", got, ng);
        }
    }
    TU_CHECK(bad == 0, "%s: %d of %d pair/single cases differ", name, bad, L.count);
    printf("%s: %d pair/single truncation cases, %d mismatches\n", name, L.count, bad);
    free(L.s);
    free(buf);
}

/* "ia ib L ka kb": HF kept ka tokens of A and kb of B. */
static void check_grid(const char *name, const Tokenizer *t, const Encoded *E, const char *rel) {
    size_t n;
    char *buf = slurp(rel, &n);
    Lines L = split_lines(buf, n);
    int bad = 0;
    int32_t got[256], types[256];
    for (int k = 0; k < L.count; k++) {
        int ia, ib, ml, ka, kb, ga, gb;
        if (sscanf(L.s[k], "%d %d %d %d %d", &ia, &ib, &ml, &ka, &kb) != 5) xr_die("%s:%d: bad line", rel, k + 1);
        tok_truncate_lengths(t, E->n[ia], E->n[ib], ml, &ga, &gb);
        int ng = tok_pair(t, E->ids[ia], E->n[ia], E->ids[ib], E->n[ib], ml, got, types);
        int ok = ga == ka && gb == kb && ng == ka + kb + tok_num_special(t, 1);
        if (!ok && ++bad <= 5)
            fprintf(stderr, "%s: na=%d nb=%d max_len=%d: HF keeps %d+%d, got %d+%d\n", name, E->n[ia], E->n[ib], ml,
                    ka, kb, ga, gb);
    }
    TU_CHECK(bad == 0, "%s: %d of %d grid cases differ", name, bad, L.count);
    printf("%s: %d (na, nb, max_len) grid cases, %d mismatches\n", name, L.count, bad);
    free(L.s);
    free(buf);
}

/* ---------------------------------------------------------------- code point sweep */
typedef struct {
    char out[256];
    size_t n;
    int words;
} Joined;

static void join_word(const WpVocab *v, void *ctx, const char *w, size_t n, int nchars) {
    Joined *j = ctx;
    if (j->words++) j->out[j->n++] = '|';
    if (j->n + n < sizeof j->out) memcpy(j->out + j->n, w, n), j->n += n;
}

static size_t put_cp(char *o, int32_t c) { return (size_t)tok_utf8_encode(c, o); }

/* The expected words of "x<c>y" for class k (see cp_sweep in the generator). */
static size_t expect_words(int32_t c, const char *k, char *o) {
    size_t m = 0;
    switch (k[0]) {
    case 0: /* unchanged */
        o[m++] = 'x', m += put_cp(o + m, c), o[m++] = 'y';
        break;
    case 'R':
        o[m++] = 'x', o[m++] = 'y';
        break;
    case 'W':
        o[m++] = 'x', o[m++] = '|', o[m++] = 'y';
        break;
    case 'P':
        o[m++] = 'x', o[m++] = '|', m += put_cp(o + m, c), o[m++] = '|', o[m++] = 'y';
        break;
    case 'D':
        o[m++] = 'x', m += put_cp(o + m, c + atoi(k + 1)), o[m++] = 'y';
        break;
    case 'J': { /* Hangul syllable -> L V (T) jamo, computed here independently of utf8proc */
        int s = c - 0xAC00;
        o[m++] = 'x';
        m += put_cp(o + m, 0x1100 + s / 588);
        m += put_cp(o + m, 0x1161 + (s % 588) / 28);
        if (s % 28) m += put_cp(o + m, 0x11A7 + s % 28);
        o[m++] = 'y';
        break;
    }
    case 'N':
    case 'M': {
        const char *h = k + 2;
        if (k[0] == 'N') o[m++] = 'x';
        for (; *h; h++) {
            if (*h == '|') o[m++] = '|';
            else
                o[m++] = (char)(hexval(h[0]) * 16 + hexval(h[1])), h++;
        }
        if (k[0] == 'N') o[m++] = 'y';
        break;
    }
    }
    return m;
}

static void check_cpmap(const char *name, const Tokenizer *t, const char *rel) {
    size_t n;
    char *buf = slurp(rel, &n);
    Lines L = split_lines(buf, n);
    const WpVocab *v = tok_wordpiece_vocab(t);
    int line = 0, bad = 0;
    long tested = 0;
    for (int32_t c = 0; c < 0x110000; c++) {
        if (c >= 0xD800 && c < 0xE000) continue;
        unsigned first = 0, last = 0;
        const char *kind = "";
        while (line < L.count && L.s[line][0]) {
            char k[8];
            int off = 0;
            sscanf(L.s[line], "%x %x %7s %n", &first, &last, k, &off);
            if ((unsigned)c > last) {
                line++;
                continue;
            }
            if ((unsigned)c >= first) kind = L.s[line] + (strchr(strchr(L.s[line], ' ') + 1, ' ') - L.s[line]) + 1;
            break;
        }
        char in[8], want[256];
        size_t m = 0;
        in[m++] = 'x', m += put_cp(in + m, c), in[m++] = 'y';
        size_t nw = expect_words(c, kind, want);
        Joined j = {.n = 0, .words = 0};
        wp_split(v, in, m, join_word, &j);
        tested++;
        if (j.n != nw || memcmp(j.out, want, nw) != 0) {
            if (++bad <= 400)
                fprintf(stderr, "%s: U+%04X (class \"%s\"): HF words \"%.*s\", got \"%.*s\"\n", name, (unsigned)c,
                        kind, (int)nw, want, (int)j.n, j.out);
        }
    }
    TU_CHECK(bad == 0, "%s: %d of %ld code points normalize / split differently from HF", name, bad, tested);
    printf("%s: %ld code points through normalizer + pre-tokenizer, %d mismatches\n", name, tested, bad);
    free(L.s);
    free(buf);
}

/* Every code point c as "x<c>y" and "<c><c> <c>", ids hashed per block of 4096 code points as the generator does. */
static void check_ids_sweep(const char *name, const Tokenizer *t, const char *rel) {
    size_t n;
    char *buf = slurp(rel, &n);
    Lines L = split_lines(buf, n);
    int32_t *ids = NULL;
    size_t cap = 0;
    int bad = 0, blocks = 0;
    for (int k = 0; k < L.count; k++) {
        unsigned start;
        unsigned long long want;
        if (sscanf(L.s[k], "%x %llx", &start, &want) != 2) xr_die("%s:%d: bad line", rel, k + 1);
        uint64_t h = 0xCBF29CE484222325ULL;
        for (int32_t c = (int32_t)start; c < (int32_t)start + 4096 && c < 0x110000; c++) {
            if (c >= 0xD800 && c < 0xE000) continue;
            char s1[8], s2[16];
            size_t m1 = 0, m2 = 0, u;
            s1[m1++] = 'x', m1 += put_cp(s1 + m1, c), s1[m1++] = 'y';
            u = put_cp(s2, c);
            memcpy(s2 + u, s2, u), m2 = 2 * u, s2[m2++] = ' ', m2 += put_cp(s2 + m2, c);
            for (int r = 0; r < 2; r++) {
                int ng = tok_encode(t, r ? s2 : s1, r ? m2 : m1, &ids, &cap);
                for (int i = 0; i <= ng; i++) {
                    uint32_t v = i < ng ? (uint32_t)ids[i] : 0xFFFFFFFFu;
                    for (int b = 0; b < 4; b++) h = (h ^ ((v >> (8 * b)) & 0xFF)) * 0x100000001B3ULL;
                }
            }
        }
        blocks++;
        if (h != want && ++bad <= 8)
            fprintf(stderr, "%s: code points U+%04X..U+%04X: ids differ from HF (hash %016llx, want %016llx)\n", name,
                    start, start + 4095, (unsigned long long)h, want);
    }
    TU_CHECK(bad == 0, "%s: %d of %d blocks of 4096 code points differ from HF", name, bad, blocks);
    printf("%s: every code point in 2 contexts (%d blocks), %d mismatching blocks\n", name, blocks, bad);
    free(ids);
    free(L.s);
    free(buf);
}

/* ---------------------------------------------------------------- errors, ids, speed */
static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) xr_die("cannot write %s", path);
    fwrite(data, 1, n, f);
    fclose(f);
}

static void check_errors(void) {
    XrErr e;
    char dir[] = "/tmp/xr_tok_test_XXXXXX";
    if (!mkdtemp(dir)) xr_die("mkdtemp failed");
    char *vocab = xr_path_join(dir, "vocab.txt"), *spm = xr_path_join(dir, "sentencepiece.bpe.model"),
         *cfg = xr_path_join(dir, "tokenizer_config.json");
    e.msg[0] = 0;
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, "vocab.txt") && strstr(e.msg, "sentencepiece.bpe.model"),
             "empty dir: %s", e.msg);
    write_file(vocab, "", 0);
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, vocab), "empty vocab: %s", e.msg);
    write_file(vocab, "[PAD]\n[UNK]\n[SEP]\nhello\n", 24);
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, "[CLS]") && strstr(e.msg, vocab), "no [CLS]: %s", e.msg);
    write_file(vocab, "[PAD]\n[UNK]\n[CLS]\nhello\n", 24);
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, "[SEP]"), "no [SEP]: %s", e.msg);
    write_file(vocab, "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n##s\r\n", 40);
    write_file(cfg, "{\"do_lower_case\": false, \"model_max_length\": 128}", 49);
    Tokenizer *t = tok_load(dir, &e);
    TU_CHECK(t != NULL, "CRLF vocab: %s", e.msg);
    if (t) {
        int32_t *ids = NULL;
        size_t cap = 0;
        int n = tok_encode(t, "hellos Hello", 12, &ids, &cap);
        TU_CHECK(n == 3 && ids[0] == 4 && ids[1] == 5 && ids[2] == 1, "cased tiny vocab: n=%d", n);
        TU_CHECK(tok_model_max_length(t) == 128 && tok_vocab_size(t) == 6 && tok_mask_id(t) == -1,
                 "config: max %d size %d", tok_model_max_length(t), tok_vocab_size(t));
        free(ids);
        tok_free(t);
    }
    write_file(cfg, "{\"do_lower_case\": tru", 21);
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, "tokenizer_config.json"), "bad json: %s", e.msg);
    remove(cfg);
    remove(vocab);
    write_file(spm, "", 0);
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, spm), "empty spm: %s", e.msg);
    write_file(spm, "this is not a model", 19);
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, spm), "corrupt spm: %s", e.msg);
    size_t n;
    char *good = slurp("fixtures/tok/xlmr/sentencepiece.bpe.model", &n);
    write_file(spm, good, n / 2);
    TU_CHECK(tok_load(dir, &e) == NULL && strstr(e.msg, spm), "truncated spm: %s", e.msg);
    free(good);
    remove(spm);
    TU_CHECK(tok_load_sentencepiece(spm, &e) == NULL && strstr(e.msg, spm), "missing spm: %s", e.msg);
    TU_CHECK(tok_load_wordpiece(vocab, 1, &e) == NULL && strstr(e.msg, vocab), "missing vocab: %s", e.msg);
    rmdir(dir);
    free(vocab);
    free(spm);
    free(cfg);
}

static void speed(const char *name, const Tokenizer *t, const Lines *in) {
    size_t bytes = 0, cap = 0;
    int32_t *ids = NULL;
    long ntok = 0;
    double t0 = xr_now(), dt;
    int reps = 0;
    do {
        for (int k = 0; k < in->count; k++) ntok += tok_encode(t, in->s[k], in->n[k], &ids, &cap), bytes += in->n[k];
        reps++;
        dt = xr_now() - t0;
    } while (dt < 0.3);
    printf("speed %s: %.1f MB/s, %.2f M tokens/s (one core, %d passes over the inputs; info only)\n", name,
           bytes / dt / 1e6, ntok / dt / 1e6, reps);
    free(ids);
}

int main(void) {
    XrErr e;
    Lines in = read_inputs();
    TU_CHECK(in.count >= 2000, "only %d inputs", in.count);

    Tokenizer *bu = tok_load(tu_path("fixtures/tok/bert"), &e);
    if (!bu) xr_die("%s", e.msg);
    Tokenizer *bc = tok_load_wordpiece(tu_path("fixtures/tok/bert/vocab.txt"), 0, &e);
    if (!bc) xr_die("%s", e.msg);
    Tokenizer *xl = tok_load(tu_path("fixtures/tok/xlmr"), &e);
    if (!xl) xr_die("%s", e.msg);

    TU_CHECK(tok_kind(bu) == TOK_WORDPIECE && tok_kind(xl) == TOK_SENTENCEPIECE, "kinds");
    TU_CHECK(tok_vocab_size(bu) == 30522 && tok_cls_id(bu) == 101 && tok_sep_id(bu) == 102 && tok_pad_id(bu) == 0 &&
                 tok_unk_id(bu) == 100 && tok_mask_id(bu) == 103 && tok_model_max_length(bu) == 512,
             "bert ids: size %d cls %d", tok_vocab_size(bu), tok_cls_id(bu));
    TU_CHECK(tok_vocab_size(xl) == 8002 && tok_cls_id(xl) == 0 && tok_pad_id(xl) == 1 && tok_sep_id(xl) == 2 &&
                 tok_unk_id(xl) == 3 && tok_mask_id(xl) == 8001,
             "xlmr ids: size %d mask %d", tok_vocab_size(xl), tok_mask_id(xl));
    TU_CHECK(strcmp(tok_id_to_piece(bu, 101), "[CLS]") == 0 && strcmp(tok_id_to_piece(xl, 8001), "<mask>") == 0 &&
                 strcmp(tok_id_to_piece(xl, 3), "<unk>") == 0 && tok_id_to_piece(xl, 8002) == NULL &&
                 tok_id_to_piece(bu, -1) == NULL,
             "id_to_piece");
    TU_CHECK(tok_num_special(bu, 1) == 3 && tok_num_special(xl, 1) == 4 && tok_num_special(xl, 0) == 2, "specials");

    /* Fingerprints: stable values (vocab / model bytes + options), different for the cased variant. */
    uint64_t fu = tok_fingerprint(bu), fc = tok_fingerprint(bc), fx = tok_fingerprint(xl);
    printf("fingerprints: bert uncased %016llx, cased %016llx, xlmr %016llx\n", (unsigned long long)fu,
           (unsigned long long)fc, (unsigned long long)fx);
    TU_CHECK(fu != fc && fu != fx, "fingerprints must differ");
    Tokenizer *bu2 = tok_load_wordpiece(tu_path("fixtures/tok/bert/vocab.txt"), 1, &e);
    TU_CHECK(bu2 && tok_fingerprint(bu2) == fu, "same vocab + options must give the same fingerprint");
    tok_free(bu2);

    Encoded Eu = check_ids("bert_uncased", bu, &in, "fixtures/tok/bert_uncased.ids");
    Encoded Ec = check_ids("bert_cased", bc, &in, "fixtures/tok/bert_cased.ids");
    encoded_free(&Ec);
    Encoded Ex = check_ids("xlmr", xl, &in, "fixtures/tok/xlmr.ids");
    check_pairs("bert_uncased", bu, &Eu, "fixtures/tok/bert_uncased.pairs");
    check_pairs("xlmr", xl, &Ex, "fixtures/tok/xlmr.pairs");
    check_grid("bert_uncased", bu, &Eu, "fixtures/tok/bert_uncased.grid");
    check_grid("xlmr", xl, &Ex, "fixtures/tok/xlmr.grid");
    check_cpmap("bert_uncased", bu, "fixtures/tok/bert_uncased.cpmap");
    check_cpmap("bert_cased", bc, "fixtures/tok/bert_cased.cpmap");
    check_ids_sweep("xlmr", xl, "fixtures/tok/xlmr.cpsweep");
    check_errors();

    speed("bert_uncased", bu, &in);
    speed("xlmr", xl, &in);
    encoded_free(&Eu);
    encoded_free(&Ex);
    tok_free(bu);
    tok_free(bc);
    tok_free(xl);
    free(in.s[0]); /* the file buffer all lines point into */
    free(in.s);
    free(in.n);
    return tu_finish("test_tokenizer");
}
