/* wordpiece.c: BERT WordPiece exactly as Hugging Face tokenizers' BertNormalizer + BertPreTokenizer + WordPiece:
 * clean text, CJK spacing, accent stripping (NFD, drop Mn), lowercasing, whitespace / punctuation split, greedy
 * longest-match pieces with "##". Character classes come from HF's own (older) Unicode tables (unicode.h);
 * NFD and lowercasing from utf8proc. One pass over the code points, an open-addressing hash table for the vocab,
 * and no allocation per word or token (one scratch buffer per call). */
#include "tok_internal.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "unicode.h"

#define WP_MAX_WORD_CHARS 100 /* HF max_input_chars_per_word: longer words become [UNK] */
#define FNV_OFF 1469598103934665603ULL
#define FNV_PRIME 1099511628211ULL

typedef struct {
    uint64_t h;
    int32_t id; /* -1: empty */
} WpSlot;

struct WpVocab {
    char *blob;        /* all tokens, NUL separated */
    uint32_t *off;     /* per id: offset into blob */
    uint32_t *len;     /* per id: byte length */
    int n;             /* number of ids (lines) */
    WpSlot *slots;
    size_t mask;
    int max_len;       /* longest token in bytes */
    uint64_t h_cont;   /* FNV state after "##" */
    int unk;
    WpOptions opt;
};

static inline uint64_t fnv_step(uint64_t h, unsigned char b) { return (h ^ b) * FNV_PRIME; }

static uint64_t fnv_bytes(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = fnv_step(h, (unsigned char)s[i]);
    return h;
}

static int wp_lookup(const WpVocab *v, uint64_t h, const char *pre, size_t npre, const char *s, size_t n) {
    for (size_t i = h & v->mask;; i = (i + 1) & v->mask) {
        const WpSlot *sl = &v->slots[i];
        if (sl->id < 0) return -1;
        if (sl->h != h) continue;
        const char *t = v->blob + v->off[sl->id];
        if (v->len[sl->id] == npre + n && memcmp(t, pre, npre) == 0 && memcmp(t + npre, s, n) == 0) return sl->id;
    }
}

int wp_find(const WpVocab *v, const char *tok, size_t n) { return wp_lookup(v, fnv_bytes(FNV_OFF, tok, n), "", 0, tok, n); }

WpVocab *wp_load(const char *buf, size_t n, const char *path, const WpOptions *opt, XrErr *e) {
    /* Lines end at \n, \r\n or \r (Python universal newlines); a final line without newline still counts. */
    size_t nl = 0;
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || buf[i] == '\r') {
            nl++;
            if (buf[i] == '\r' && i + 1 < n && buf[i + 1] == '\n') i++;
        }
    }
    if (n && buf[n - 1] != '\n' && buf[n - 1] != '\r') nl++;
    /* ids are ints and the token blob (bytes + one NUL per line) is addressed by 32-bit offsets */
    if (nl > INT_MAX || (uint64_t)n + nl >= UINT32_MAX) {
        xr_errf(e, "%s: %zu bytes in %zu lines: a vocabulary holds at most %d tokens in under 4 GiB", path, n, nl,
                INT_MAX);
        return NULL;
    }
    int lines = (int)nl;
    if (lines == 0) {
        xr_errf(e, "%s: empty vocabulary file", path);
        return NULL;
    }
    if (tok_utf8_valid_prefix(buf, n) != n) {
        size_t off = tok_utf8_valid_prefix(buf, n);
        xr_errf(e, "%s: invalid UTF-8 at byte offset %zu", path, off);
        return NULL;
    }
    WpVocab *v = xr_calloc(1, sizeof *v);
    v->opt = *opt;
    v->n = lines;
    v->blob = xr_malloc(n + (size_t)lines + 1);
    v->off = xr_malloc(sizeof(uint32_t) * (size_t)lines);
    v->len = xr_malloc(sizeof(uint32_t) * (size_t)lines);
    size_t cap = 16;
    while (cap < (size_t)lines * 2) cap *= 2;
    v->slots = xr_malloc(sizeof(WpSlot) * cap);
    for (size_t i = 0; i < cap; i++) v->slots[i].id = -1;
    v->mask = cap - 1;
    v->h_cont = fnv_bytes(FNV_OFF, "##", 2);
    v->unk = -1;
    size_t pos = 0, bpos = 0;
    for (int id = 0; id < lines; id++) {
        size_t s = pos;
        while (pos < n && buf[pos] != '\n' && buf[pos] != '\r') pos++;
        size_t len = pos - s;
        if (pos < n) pos += (buf[pos] == '\r' && pos + 1 < n && buf[pos + 1] == '\n') ? 2 : 1;
        memcpy(v->blob + bpos, buf + s, len);
        v->blob[bpos + len] = 0;
        v->off[id] = (uint32_t)bpos;
        v->len[id] = (uint32_t)len;
        bpos += len + 1;
        if ((int)len > v->max_len) v->max_len = (int)len;
        /* A repeated token keeps the last id, as transformers' dict-based load_vocab does. */
        uint64_t h = fnv_bytes(FNV_OFF, buf + s, len);
        size_t i = h & v->mask;
        for (;; i = (i + 1) & v->mask) {
            WpSlot *sl = &v->slots[i];
            if (sl->id < 0) break;
            if (sl->h == h && v->len[sl->id] == len && memcmp(v->blob + v->off[sl->id], buf + s, len) == 0) break;
        }
        v->slots[i].h = h;
        v->slots[i].id = id;
    }
    return v;
}

void wp_free(WpVocab *v) {
    if (!v) return;
    free(v->blob);
    free(v->off);
    free(v->len);
    free(v->slots);
    free(v);
}

int wp_size(const WpVocab *v) { return v->n; }
void wp_set_unk(WpVocab *v, int unk_id) { v->unk = unk_id; }

const char *wp_piece(const WpVocab *v, int id) {
    if (id < 0 || id >= v->n) return NULL;
    return v->blob + v->off[id];
}

/* ---------------------------------------------------------------- character classes (HF's tables) */

static int wp_is_cjk(int32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static int wp_is_punct(int32_t c) {
    if (c < 0x80) return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126);
    return uc_hf_class(c) == UC_PUNCT;
}

/* Normalize one input code point as BertNormalizer does (clean, strip accents, lowercase): writes 0..n code points
 * to out (space for whitespace) and returns n. Sets *cjk when the character is a CJK ideograph. */
static int wp_norm(const WpVocab *v, int32_t c, int32_t *out, int cap, int *cjk) {
    *cjk = 0;
    if (c < 0x80) {
        if (c == '\t' || c == '\n' || c == '\r' || c == ' ') {
            out[0] = ' ';
            return 1;
        }
        if (c < 0x20 || c == 0x7F) return 0;
        out[0] = (v->opt.lowercase && c >= 'A' && c <= 'Z') ? c + 32 : c;
        return 1;
    }
    int cls = uc_hf_class(c);
    if (c == 0xFFFD || cls == UC_REMOVED) return 0;
    if (cls == UC_SPACE || tok_is_rust_ws(c)) {
        out[0] = ' ';
        return 1;
    }
    *cjk = v->opt.chinese_chars && wp_is_cjk(c);
    int n = 1;
    out[0] = c;
    if (v->opt.strip_accents) {
        const int32_t *o = uc_hf_override(uc_hf_strip_ovr, (int)(sizeof uc_hf_strip_ovr / sizeof uc_hf_strip_ovr[0]), c);
        if (o) {
            n = 0;
            while (n < 3 && o[n]) out[n] = o[n], n++;
        } else {
            int last = 0;
            utf8proc_ssize_t r = utf8proc_decompose_char(c, out, cap, UTF8PROC_DECOMPOSE, &last);
            assert(r >= 1 && r <= cap); /* a code point decomposes into at most 4 (Hangul 3, others <= 18) */
            n = 0;
            for (int i = 0; i < (int)r; i++)
                if (uc_hf_class(out[i]) != UC_MARK) out[n++] = out[i];
        }
    }
    if (v->opt.lowercase) {
        /* Lowercasing can lengthen the text (U+0130 -> i + U+0307): map into a copy. */
        int32_t tmp[32];
        int m = 0;
        for (int i = 0; i < n; i++) {
            int32_t d = out[i];
            const int32_t *o =
                d < 0x80 ? NULL : uc_hf_override(uc_hf_lower_ovr, (int)(sizeof uc_hf_lower_ovr / sizeof uc_hf_lower_ovr[0]), d);
            if (o) {
                for (int k = 0; k < 3 && o[k] && m < 32; k++) tmp[m++] = o[k];
            } else if (m < 32)
                tmp[m++] = utf8proc_tolower(d);
        }
        if (m > cap) m = cap;
        memcpy(out, tmp, sizeof(int32_t) * (size_t)m);
        n = m;
    }
    return n;
}

/* ---------------------------------------------------------------- WordPiece on one word */

static void push_id(int32_t **ids, size_t *cap, size_t *len, int32_t id) {
    if (*len == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *ids = xr_realloc(*ids, *cap * sizeof(int32_t));
    }
    (*ids)[(*len)++] = id;
}

/* w[0..n) holds one pre-tokenized word (nchars code points). Greedy longest match from the left. */
static void wp_word(const WpVocab *v, const char *w, size_t n, int nchars, int32_t **ids, size_t *cap, size_t *len) {
    if (nchars > WP_MAX_WORD_CHARS) {
        push_id(ids, cap, len, v->unk);
        return;
    }
    size_t start = 0, first = *len;
    uint64_t hs[WP_MAX_WORD_CHARS * 4 + 1];
    while (start < n) {
        size_t lim = n - start;
        if (lim > (size_t)v->max_len) lim = (size_t)v->max_len;
        uint64_t h = start ? v->h_cont : FNV_OFF;
        for (size_t k = 0; k < lim; k++) hs[k] = h = fnv_step(h, (unsigned char)w[start + k]);
        int found = -1;
        size_t end = lim;
        for (; end > 0; end--) {
            if (start + end < n && ((unsigned char)w[start + end] & 0xC0) == 0x80) continue; /* not a char boundary */
            found = wp_lookup(v, hs[end - 1], start ? "##" : "", start ? 2 : 0, w + start, end);
            if (found >= 0) break;
        }
        if (found < 0) {
            *len = first;
            push_id(ids, cap, len, v->unk);
            return;
        }
        push_id(ids, cap, len, found);
        start += end;
    }
}

typedef struct {
    int32_t **ids;
    size_t *cap, *len;
} WpOut;

static void wp_emit_ids(const WpVocab *v, void *ctx, const char *w, size_t n, int nchars) {
    WpOut *o = ctx;
    wp_word(v, w, n, nchars, o->ids, o->cap, o->len);
}

void wp_encode(const WpVocab *v, const char *text, size_t n, int32_t **ids, size_t *cap, size_t *len) {
    WpOut o = {ids, cap, len};
    wp_split(v, text, n, wp_emit_ids, &o);
}

void wp_split(const WpVocab *v, const char *text, size_t n, WpWordFn emit, void *ctx) {
    /* Word buffer: a word keeps at most WP_MAX_WORD_CHARS + 1 chars (longer ones are [UNK] anyway). */
    char word[(WP_MAX_WORD_CHARS + 1) * 4 + 8];
    size_t wn = 0;
    int wchars = 0;
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    int32_t buf[32];
    while (i < n) {
        int adv, cjk, m;
        int32_t c = tok_utf8_decode(s + i, &adv);
        i += (size_t)adv;
        if (c < 0x80) { /* ASCII fast path, same rules as wp_norm */
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
                if (wchars) emit(v, ctx, word, wn, wchars);
                wn = 0, wchars = 0;
                continue;
            }
            if (c < 0x20 || c == 0x7F) continue;
            if (wp_is_punct(c)) {
                if (wchars) emit(v, ctx, word, wn, wchars);
                word[0] = (char)c;
                emit(v, ctx, word, 1, 1);
                wn = 0, wchars = 0;
                continue;
            }
            if (wchars <= WP_MAX_WORD_CHARS) word[wn++] = (char)((v->opt.lowercase && c >= 'A' && c <= 'Z') ? c + 32 : c);
            wchars++;
            continue;
        }
        m = wp_norm(v, c, buf, 32, &cjk);
        if (cjk && wchars) {
            emit(v, ctx, word, wn, wchars);
            wn = 0, wchars = 0;
        }
        for (int k = 0; k < m; k++) {
            int32_t d = buf[k];
            if (d == ' ' || tok_is_rust_ws(d)) {
                if (wchars) emit(v, ctx, word, wn, wchars);
                wn = 0, wchars = 0;
            } else if (wp_is_punct(d)) {
                if (wchars) emit(v, ctx, word, wn, wchars);
                int pl = tok_utf8_encode(d, word);
                emit(v, ctx, word, (size_t)pl, 1);
                wn = 0, wchars = 0;
            } else {
                if (wchars <= WP_MAX_WORD_CHARS) wn += (size_t)tok_utf8_encode(d, word + wn);
                wchars++;
            }
        }
        if (cjk && wchars) {
            emit(v, ctx, word, wn, wchars);
            wn = 0, wchars = 0;
        }
    }
    if (wchars) emit(v, ctx, word, wn, wchars);
}
