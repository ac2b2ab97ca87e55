/* unigram.c: the Unigram (SentencePiece) Viterbi segmentation exactly as Hugging Face tokenizers runs it for
 * XLM-R: the fairseq vocabulary (<s> <pad> </s> <unk>, spm pieces 3.., <mask>) with f64 scores, candidates tried
 * from each start position in order of length with strict '>' (so ties keep the earlier split, where
 * libsentencepiece can pick the other one), one unknown node (min score - 10) per uncovered char, and runs of
 * unknowns fused into one <unk>. Pieces and scores come from libsentencepiece through the shim. */
#include <stdlib.h>
#include <string.h>

#include "spm_shim.h"
#include "tok_internal.h"

#define FNV_OFF 1469598103934665603ULL
#define FNV_PRIME 1099511628211ULL
#define UG_UNK_PENALTY 10.0

typedef struct {
    uint64_t h;
    int32_t id; /* -1: empty */
} UgSlot;

struct UgModel {
    char *blob;
    uint32_t *off, *len;
    double *score;
    int n;
    UgSlot *slots;
    size_t mask;
    int max_len;
    /* Bitmaps over hashes (top bits) of every token prefix and of every token: the walk from a start position
     * stops at the first prefix no token has, and only probable tokens are looked up. */
    uint64_t *pre_bits, *tok_bits;
    int bits_log2;
    int unk;
    double unk_score;
};

static inline uint64_t fnv_step(uint64_t h, unsigned char b) { return (h ^ b) * FNV_PRIME; }

static int ug_lookup(const UgModel *m, uint64_t h, const char *s, size_t n) {
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        const UgSlot *sl = &m->slots[i];
        if (sl->id < 0) return -1;
        if (sl->h == h && m->len[sl->id] == n && memcmp(m->blob + m->off[sl->id], s, n) == 0) return sl->id;
    }
}

UgModel *ug_build(const SpmShim *sp) {
    int np = spm_shim_piece_size(sp);
    UgModel *m = xr_calloc(1, sizeof *m);
    m->n = np + 2;
    m->off = xr_malloc(sizeof(uint32_t) * (size_t)m->n);
    m->len = xr_malloc(sizeof(uint32_t) * (size_t)m->n);
    m->score = xr_malloc(sizeof(double) * (size_t)m->n);
    size_t total = 64;
    for (int i = 3; i < np; i++) total += strlen(spm_shim_id_to_piece(sp, i)) + 1;
    m->blob = xr_malloc(total);
    size_t cap = 16;
    while (cap < (size_t)m->n * 2) cap *= 2;
    m->slots = xr_malloc(sizeof(UgSlot) * cap);
    for (size_t i = 0; i < cap; i++) m->slots[i].id = -1;
    m->mask = cap - 1;
    size_t pos = 0;
    double min_score = 0;
    for (int id = 0; id < m->n; id++) {
        static const char *fixed[4] = {"<s>", "<pad>", "</s>", "<unk>"};
        const char *s = id < 4 ? fixed[id] : id == m->n - 1 ? "<mask>" : spm_shim_id_to_piece(sp, id - 1);
        double sc = (id < 4 || id == m->n - 1) ? 0.0 : (double)spm_shim_score(sp, id - 1);
        size_t len = strlen(s);
        memcpy(m->blob + pos, s, len + 1);
        m->off[id] = (uint32_t)pos;
        m->len[id] = (uint32_t)len;
        m->score[id] = sc;
        pos += len + 1;
        if (sc < min_score) min_score = sc;
        if ((int)len > m->max_len) m->max_len = (int)len;
        /* Every token, specials included, is in HF's trie; a repeated string keeps the last id. */
        uint64_t h = FNV_OFF;
        for (size_t k = 0; k < len; k++) h = fnv_step(h, (unsigned char)s[k]);
        size_t i = h & m->mask;
        for (;; i = (i + 1) & m->mask) {
            UgSlot *sl = &m->slots[i];
            if (sl->id < 0) break;
            if (sl->h == h && m->len[sl->id] == len && memcmp(m->blob + m->off[sl->id], s, len) == 0) break;
        }
        m->slots[i].h = h;
        m->slots[i].id = id;
    }
    size_t prefixes = 0;
    for (int id = 0; id < m->n; id++) prefixes += m->len[id];
    m->bits_log2 = 10;
    while (((size_t)1 << m->bits_log2) < prefixes * 16) m->bits_log2++;
    size_t words = ((size_t)1 << m->bits_log2) / 64;
    m->pre_bits = xr_calloc(words, sizeof(uint64_t));
    m->tok_bits = xr_calloc(words, sizeof(uint64_t));
    for (int id = 0; id < m->n; id++) {
        const unsigned char *t = (const unsigned char *)m->blob + m->off[id];
        uint64_t h = FNV_OFF, b = 0;
        for (uint32_t k = 0; k < m->len[id]; k++) {
            h = fnv_step(h, t[k]);
            b = h >> (64 - m->bits_log2);
            m->pre_bits[b >> 6] |= 1ULL << (b & 63);
        }
        if (m->len[id]) m->tok_bits[b >> 6] |= 1ULL << (b & 63);
    }
    m->unk = 3;
    m->unk_score = min_score - UG_UNK_PENALTY;
    return m;
}

const char *ug_piece_str(const UgModel *m, int id) {
    if (id < 0 || id >= m->n) return NULL;
    return m->blob + m->off[id];
}

int ug_size(const UgModel *m) { return m->n; }

void ug_free(UgModel *m) {
    if (!m) return;
    free(m->blob);
    free(m->off);
    free(m->len);
    free(m->score);
    free(m->slots);
    free(m->pre_bits);
    free(m->tok_bits);
    free(m);
}

static void ug_push(int32_t **ids, size_t *cap, size_t *len, int32_t id) {
    if (*len == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *ids = xr_realloc(*ids, *cap * sizeof(int32_t));
    }
    (*ids)[(*len)++] = id;
}

static inline int utf8_len(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

/* Viterbi over one pre-tokenized piece w[0..n) ("▁word"). */
static void ug_piece(const UgModel *m, const char *w, size_t n, UgScratch *sc, int32_t **ids, size_t *cap,
                     size_t *len) {
    if (sc->cap < n + 1) {
        sc->cap = (n + 1) * 2;
        sc->best = xr_realloc(sc->best, sizeof(double) * sc->cap);
        sc->from = xr_realloc(sc->from, sizeof(int32_t) * sc->cap);
        sc->tok = xr_realloc(sc->tok, sizeof(int32_t) * sc->cap);
    }
    double *best = sc->best;
    int32_t *from = sc->from, *tok = sc->tok;
    for (size_t i = 0; i <= n; i++) from[i] = -1;
    best[0] = 0;
    for (size_t s = 0; s < n;) {
        int mb = utf8_len((unsigned char)w[s]);
        double here = best[s];
        int single = 0;
        uint64_t h = FNV_OFF;
        size_t lim = n - s < (size_t)m->max_len ? n - s : (size_t)m->max_len;
        for (size_t k = 0; k < lim; k++) {
            h = fnv_step(h, (unsigned char)w[s + k]);
            uint64_t b = h >> (64 - m->bits_log2);
            if (!(m->pre_bits[b >> 6] >> (b & 63) & 1)) break; /* no token continues this prefix */
            size_t e = s + k + 1;
            if (e < n && ((unsigned char)w[e] & 0xC0) == 0x80) continue; /* trie keys end on char boundaries */
            if (!(m->tok_bits[b >> 6] >> (b & 63) & 1)) continue;
            int id = ug_lookup(m, h, w + s, k + 1);
            if (id < 0) continue;
            double cand = here + m->score[id];
            if (from[e] < 0 || cand > best[e]) best[e] = cand, from[e] = (int32_t)s, tok[e] = id;
            if ((int)(k + 1) == mb) single = 1;
        }
        if (!single) {
            size_t e = s + (size_t)mb;
            double cand = here + m->unk_score;
            if (from[e] < 0 || cand > best[e]) best[e] = cand, from[e] = (int32_t)s, tok[e] = m->unk;
        }
        s += (size_t)mb;
    }
    /* Backtrack, then emit in order with consecutive unknowns fused. */
    size_t first = *len;
    for (size_t e = n; e > 0; e = (size_t)from[e]) ug_push(ids, cap, len, tok[e]);
    int32_t *o = *ids;
    for (size_t a = first, b = *len - 1; a < b; a++, b--) {
        int32_t x = o[a];
        o[a] = o[b], o[b] = x;
    }
    size_t k = first;
    for (size_t i = first; i < *len; i++)
        if (!(o[i] == m->unk && k > first && o[k - 1] == m->unk)) o[k++] = o[i];
    *len = k;
}

/* Normalized text (whitespace already ' '): HF's WhitespaceSplit, then Metaspace (prefix "▁" unless the word
 * starts with one, split before every "▁"), then Viterbi per piece. */
void ug_encode(const UgModel *m, const char *s, size_t n, UgScratch *sc, int32_t **ids, size_t *cap, size_t *len) {
    static const char META[3] = {(char)0xE2, (char)0x96, (char)0x81};
    size_t i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ') i++;
        size_t j = i;
        while (j < n && s[j] != ' ') j++;
        if (j == i) break;
        size_t need = j - i + 3;
        if (sc->wcap < need) {
            sc->wcap = need * 2;
            sc->word = xr_realloc(sc->word, sc->wcap);
        }
        size_t wn = 0;
        if (!(j - i >= 3 && memcmp(s + i, META, 3) == 0)) memcpy(sc->word, META, 3), wn = 3;
        memcpy(sc->word + wn, s + i, j - i);
        wn += j - i;
        size_t p = 0;
        while (p < wn) {
            size_t q = p + 3;
            while (q < wn && !(q + 3 <= wn && memcmp(sc->word + q, META, 3) == 0)) q++;
            ug_piece(m, sc->word + p, q - p, sc, ids, cap, len);
            p = q;
        }
        i = j;
    }
}

void ug_scratch_free(UgScratch *sc) {
    free(sc->best);
    free(sc->from);
    free(sc->tok);
    free(sc->word);
}
