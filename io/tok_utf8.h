/* tok_utf8.h: the UTF-8 helpers every tokenizer file shares (inside io/; tok_internal.h includes it): decode and
 * encode one code point, the valid prefix of a text and its lossy repair (tok_utf8.c). Depends on nothing of
 * the tokenizers, so tokenizer.c and wordpiece.c can both use it without depending on each other. */
#ifndef XR_TOK_UTF8_H
#define XR_TOK_UTF8_H
#include <stddef.h>
#include <stdint.h>

/* Decode one code point of valid UTF-8 at s (n >= 1 bytes left); sets *adv to its byte length. */
static inline int32_t tok_utf8_decode(const unsigned char *s, int *adv) {
    if (s[0] < 0x80) {
        *adv = 1;
        return s[0];
    }
    if (s[0] < 0xE0) {
        *adv = 2;
        return ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (s[0] < 0xF0) {
        *adv = 3;
        return ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    *adv = 4;
    return ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

static inline int tok_utf8_encode(int32_t c, char *out) {
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xC0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xE0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        out[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    out[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

/* Length of the longest valid UTF-8 prefix of s[0..n) (the whole n when the text is valid). */
size_t tok_utf8_valid_prefix(const char *s, size_t n);
/* Copy s[0..n) into *buf (realloc'd, *cap) replacing each maximal invalid subpart by U+FFFD, the rule of
 * Rust's String::from_utf8_lossy and Python's decode('utf-8', 'replace'); *nbad (may be NULL) grows by the
 * replacements. Returns the new length. */
size_t tok_utf8_lossy(const char *s, size_t n, char **buf, size_t *cap, int64_t *nbad);

#endif
