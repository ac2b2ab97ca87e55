/* spm_norm.c: the SentencePiece character normalization as Hugging Face's Precompiled normalizer applies it (not as
 * libsentencepiece does): the model's precompiled charsmap (a darts-clone trie of NFKC-style rewrites) is applied
 * per extended grapheme cluster when the cluster is under 6 bytes and has a match (the first, shortest prefix
 * match), else per code point. spm's own normalizer takes longest matches across clusters, which differs on e.g.
 * conjoining Hangul jamo. The charsmap is read from the model's protobuf (normalizer_spec.precompiled_charsmap). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

struct SpmNorm {
    uint32_t *units;  /* darts-clone double array */
    size_t n_units;
    char *strs;       /* NUL-terminated replacement strings */
    size_t n_strs;
    /* Replacement of each ASCII byte that the charsmap maps (len 255 = unmapped). */
    unsigned char asc_len[128];
    char asc_out[128][8];
};

/* ---------------------------------------------------------------- protobuf (just enough to walk fields) */

static int pb_varint(const unsigned char *p, size_t n, size_t *i, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*i >= n) return -1;
        unsigned char b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

/* Skip one field's payload; for length-delimited fields report where the payload is. */
static int pb_skip(const unsigned char *p, size_t n, size_t *i, int wire, size_t *off, size_t *len) {
    uint64_t v;
    switch (wire) {
    case 0:
        return pb_varint(p, n, i, &v);
    case 1:
        if (n - *i < 8) return -1;
        *i += 8;
        return 0;
    case 5:
        if (n - *i < 4) return -1;
        *i += 4;
        return 0;
    case 2:
        if (pb_varint(p, n, i, &v) || v > n - *i) return -1;
        *off = *i, *len = (size_t)v;
        *i += (size_t)v;
        return 0;
    default:
        return -1;
    }
}

/* The charsmap blob: uint32 trie byte size, the trie units, then the replacement strings. */
static SpmNorm *spm_norm_from_charsmap(const unsigned char *b, size_t n, char *err, size_t errlen) {
    SpmNorm *s = xr_calloc(1, sizeof *s);
    if (n > 0) {
        uint32_t tsize;
        if (n < 4) goto bad;
        memcpy(&tsize, b, 4);
        if (tsize % 4 || tsize > n - 4 || tsize == 0) goto bad;
        s->n_units = tsize / 4;
        s->units = xr_malloc(tsize);
        memcpy(s->units, b + 4, tsize);
        s->n_strs = n - 4 - tsize;
        s->strs = xr_malloc(s->n_strs + 1);
        memcpy(s->strs, b + 4 + tsize, s->n_strs);
        s->strs[s->n_strs] = 0;
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        const char *r;
        size_t rl;
        if (spm_norm_match(s, &ch, 1, &r, &rl) && rl < sizeof s->asc_out[0]) {
            memcpy(s->asc_out[c], r, rl);
            s->asc_len[c] = (unsigned char)rl;
        } else
            s->asc_len[c] = 255;
    }
    return s;
bad:
    snprintf(err, errlen, "corrupt precompiled_charsmap in normalizer_spec (%zu bytes)", n);
    spm_norm_free(s);
    return NULL;
}

SpmNorm *spm_norm_from_model(const void *model, size_t n, char *err, size_t errlen) {
    const unsigned char *p = model;
    size_t i = 0, cm_off = 0, cm_len = 0;
    while (i < n) {
        size_t start = i, off = 0, len = 0;
        uint64_t key;
        if (pb_varint(p, n, &i, &key) || pb_skip(p, n, &i, (int)(key & 7), &off, &len)) {
            snprintf(err, errlen, "not a valid sentencepiece model (protobuf error at byte offset %zu)", start);
            return NULL;
        }
        if ((key >> 3) == 3 && (key & 7) == 2) { /* normalizer_spec: find precompiled_charsmap (field 2) */
            size_t j = off, end = off + len;
            while (j < end) {
                size_t o2 = 0, l2 = 0, js = j;
                uint64_t k2;
                if (pb_varint(p, end, &j, &k2) || pb_skip(p, end, &j, (int)(k2 & 7), &o2, &l2)) {
                    snprintf(err, errlen, "not a valid sentencepiece model (bad normalizer_spec at byte offset %zu)",
                             js);
                    return NULL;
                }
                if ((k2 >> 3) == 2 && (k2 & 7) == 2) cm_off = o2, cm_len = l2;
            }
        }
    }
    return spm_norm_from_charsmap(p + cm_off, cm_len, err, errlen);
}

void spm_norm_free(SpmNorm *s) {
    if (!s) return;
    free(s->units);
    free(s->strs);
    free(s);
}

/* darts-clone common prefix search, first (shortest) hit: HF's Precompiled::transform. */
int spm_norm_match(const SpmNorm *s, const char *key, size_t n, const char **out, size_t *out_len) {
    if (!s->n_units) return 0;
    const uint32_t *a = s->units;
#define DA_OFFSET(u) (((u) >> 10) << (((u) & (1U << 9)) >> 6))
#define DA_LABEL(u) ((u) & ((1U << 31) | 0xFF))
#define DA_HAS_LEAF(u) (((u) >> 8) & 1)
#define DA_VALUE(u) ((u) & ((1U << 31) - 1))
    size_t pos = DA_OFFSET(a[0]);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        pos ^= c;
        if (pos >= s->n_units) return 0;
        uint32_t u = a[pos];
        if (DA_LABEL(u) != c) return 0;
        pos ^= DA_OFFSET(u);
        if (pos >= s->n_units) return 0;
        if (DA_HAS_LEAF(u)) {
            uint32_t v = DA_VALUE(a[pos]);
            if (v >= s->n_strs) return 0;
            *out = s->strs + v;
            *out_len = strlen(*out);
            return 1;
        }
    }
    return 0;
#undef DA_OFFSET
#undef DA_LABEL
#undef DA_HAS_LEAF
#undef DA_VALUE
}

/* Append normalized bytes, turning every Rust-whitespace code point into ' ' (HF's WhitespaceSplit splits on
 * them; spm then only needs to see plain spaces). */
static void emit(const char *r, size_t rl, char **buf, size_t *cap, size_t *m) {
    if (*m + rl + 1 > *cap) {
        *cap = (*m + rl + 1) * 2;
        *buf = xr_realloc(*buf, *cap);
    }
    for (size_t k = 0; k < rl;) {
        unsigned char b = (unsigned char)r[k];
        if (b < 0x80) {
            (*buf)[(*m)++] = (b >= 0x09 && b <= 0x0D) ? ' ' : (char)b;
            k++;
            continue;
        }
        int adv;
        int32_t c = tok_utf8_decode((const unsigned char *)r + k, &adv);
        if (tok_is_rust_ws(c)) (*buf)[(*m)++] = ' ';
        else
            memcpy(*buf + *m, r + k, (size_t)adv), *m += (size_t)adv;
        k += (size_t)adv;
    }
}

size_t spm_norm_apply(const SpmNorm *s, const char *text, size_t n, char **buf, size_t *cap) {
    const unsigned char *t = (const unsigned char *)text;
    size_t i = 0, m = 0;
    utf8proc_int32_t state = 0;
    if (*cap < n + 1) {
        *cap = n + 1;
        *buf = xr_realloc(*buf, *cap);
    }
    while (i < n) {
        /* Fast path: an ASCII char followed by ASCII is a cluster of its own (except CR LF). */
        if (t[i] < 0x80 && (i + 1 == n || (t[i + 1] < 0x80 && !(t[i] == '\r' && t[i + 1] == '\n')))) {
            if (s->asc_len[t[i]] == 255) emit(text + i, 1, buf, cap, &m);
            else
                emit(s->asc_out[t[i]], s->asc_len[t[i]], buf, cap, &m);
            i++;
            state = 0;
            continue;
        }
        /* One extended grapheme cluster [i, j). */
        int adv;
        int32_t c = tok_utf8_decode(t + i, &adv);
        size_t j = i + (size_t)adv;
        while (j < n) {
            int adv2;
            int32_t c2 = tok_utf8_decode(t + j, &adv2);
            if (utf8proc_grapheme_break_stateful(c, c2, &state)) break;
            c = c2;
            j += (size_t)adv2;
        }
        state = 0;
        const char *r;
        size_t rl;
        if (j - i < 6 && spm_norm_match(s, text + i, j - i, &r, &rl)) {
            emit(r, rl, buf, cap, &m);
        } else {
            for (size_t k = i; k < j; k += (size_t)adv) {
                tok_utf8_decode(t + k, &adv);
                if (spm_norm_match(s, text + k, (size_t)adv, &r, &rl)) emit(r, rl, buf, cap, &m);
                else
                    emit(text + k, (size_t)adv, buf, cap, &m);
            }
        }
        i = j;
    }
    return m;
}
