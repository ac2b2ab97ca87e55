/* tok_utf8.c: UTF-8 validation and lossy repair for the tokenizers (Unicode Table 3-7 well-formedness; one
 * U+FFFD per maximal ill-formed subpart). Its own file so that tokenizer.c and wordpiece.c both depend on it
 * instead of on each other. */
#include "tok_utf8.h"

#include <string.h>

#include "xr_common.h"

/* Length of the well-formed sequence at s[i] (Unicode Table 3-7), or -k where k >= 1 is the length of the maximal
 * ill-formed subpart to replace with one U+FFFD. */
static int utf8_seq(const unsigned char *s, size_t n, size_t i) {
    unsigned b = s[i];
    if (b < 0x80) return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else
        return -1;
    for (int k = 1; k <= need; k++) {
        if (i + (size_t)k >= n) return -k;
        unsigned c = s[i + (size_t)k];
        if (c < lo || c > hi) return -k;
        lo = 0x80, hi = 0xBF;
    }
    return need + 1;
}

size_t tok_utf8_valid_prefix(const char *text, size_t n) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        int k = utf8_seq(s, n, i);
        if (k < 0) return i;
        i += (size_t)k;
    }
    return n;
}

size_t tok_utf8_lossy(const char *text, size_t n, char **buf, size_t *cap, int64_t *nbad) {
    const unsigned char *s = (const unsigned char *)text;
    if (*cap < n * 3 + 1) { /* each bad byte can become 3 bytes of U+FFFD */
        *cap = n * 3 + 1;
        *buf = xr_realloc(*buf, *cap);
    }
    char *o = *buf;
    size_t i = 0, m = 0;
    while (i < n) {
        int k = utf8_seq(s, n, i);
        if (k > 0) {
            memcpy(o + m, s + i, (size_t)k);
            m += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(o + m, "\xEF\xBF\xBD", 3);
            m += 3;
            if (nbad) ++*nbad;
            i += (size_t)-k;
        }
    }
    o[m] = 0;
    return m;
}
