/* linereader.c: the streaming line reader of the text inputs (LineReader in textread.h) over a plain or gzip
 * file through zlib; a truncated or corrupt gzip stream is an error naming the file and the line reached. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "textread.h"
#include "tok_utf8.h"

/* The error for invalid UTF-8 at s[ok] of line line of path (every text input words it the same). */
static int lr_utf8_error(const char *path, int64_t line, const char *s, size_t ok, XrErr *e) {
    return xr_errf(e, "%s:%lld: invalid UTF-8 at byte %zu of the line (0x%02X): text inputs are read as UTF-8 and, "
                      "like Python's strict decoding, refuse it; fix the file (iconv) or pass --utf8-errors replace "
                      "to read each bad sequence as U+FFFD (counted)",
                   path, (long long)line, ok + 1, (unsigned)(unsigned char)s[ok]);
}

int tr_utf8_buffer(const char *name, char **data, size_t *len, int replace, int64_t *replaced, int64_t *lines,
                   XrErr *e) {
    const char *d = *data;
    size_t n = *len, pos = 0, cap = 0, out_n = 0;
    char *out = NULL, *fix = NULL;
    size_t fix_cap = 0;
    int64_t line = 0;
    while (pos < n) {
        const char *nl = memchr(d + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - d) : n, ln = end - pos;
        line++;
        size_t ok = tok_utf8_valid_prefix(d + pos, ln);
        if (ok != ln && !replace) {
            free(out);
            return lr_utf8_error(name, line, d + pos, ok, e);
        }
        if (ok != ln && !out) { /* the first bad line: copy what came before */
            cap = n + n / 2 + 16;
            out = xr_malloc(cap);
            memcpy(out, d, pos);
            out_n = pos;
        }
        const char *piece = d + pos;
        size_t pn = ln;
        if (ok != ln) {
            pn = tok_utf8_lossy(d + pos, ln, &fix, &fix_cap, replaced);
            piece = fix;
            (*lines)++;
        }
        if (out) {
            if (out_n + pn + 2 > cap) out = xr_realloc(out, cap = (out_n + pn + 2) * 2);
            memcpy(out + out_n, piece, pn);
            out_n += pn;
            if (nl) out[out_n++] = '\n';
        }
        pos = end + 1;
    }
    free(fix);
    if (out) {
        out[out_n] = 0;
        free(*data);
        *data = out;
        *len = out_n;
    }
    return 0;
}

int lr_open(LineReader *r, const char *path, XrErr *e) {
    memset(r, 0, sizeof *r);
    r->path = path;
    struct stat st;
    if (stat(path, &st) != 0) return xr_errf(e, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return xr_errf(e, "%s: is a directory, a file was expected", path);
    gzFile g = gzopen(path, "rb"); /* reads plain files as they are (transparent mode) */
    if (!g) return xr_errf(e, "%s: cannot open: %s", path, errno ? strerror(errno) : "zlib out of memory");
    gzbuffer(g, 1 << 17);
    r->gz = g;
    r->cap = 1 << 16;
    r->buf = xr_malloc(r->cap);
    return 0;
}

void lr_close(LineReader *r) {
    if (r->gz) gzclose_r((gzFile)r->gz);
    free(r->buf);
    free(r->fix);
    r->gz = NULL;
    r->buf = NULL;
    r->fix = NULL;
}

int lr_next(LineReader *r, char **line, size_t *len, XrErr *e) {
    size_t scanned = r->beg;
    for (;;) {
        char *nl = memchr(r->buf + scanned, '\n', r->end - scanned);
        if (nl || (r->eof && r->beg < r->end)) {
            char *s = r->buf + r->beg;
            size_t n = nl ? (size_t)(nl - s) : r->end - r->beg;
            s[n] = 0; /* end < cap always leaves room for this NUL */
            r->beg = nl ? (size_t)(nl + 1 - r->buf) : r->end;
            if (n && s[n - 1] == '\r') s[--n] = 0;
            r->line++;
            size_t ok = tok_utf8_valid_prefix(s, n);
            if (ok != n) {
                if (!r->utf8_replace) return lr_utf8_error(r->path, r->line, s, ok, e);
                n = tok_utf8_lossy(s, n, &r->fix, &r->fix_cap, &r->utf8_replaced);
                r->utf8_lines++;
                s = r->fix;
            }
            *line = s;
            *len = n;
            return 1;
        }
        if (r->eof) return 0;
        if (r->beg > 0) {
            memmove(r->buf, r->buf + r->beg, r->end - r->beg);
            r->end -= r->beg;
            r->beg = 0;
        }
        scanned = r->end;
        if (r->end + 1 >= r->cap) r->buf = xr_realloc(r->buf, r->cap *= 2);
        size_t want = r->cap - r->end - 1;
        if (want > INT_MAX / 2) want = INT_MAX / 2;
        int got = gzread((gzFile)r->gz, r->buf + r->end, (unsigned)want);
        int zerr = Z_OK;
        const char *zmsg = got <= 0 ? gzerror((gzFile)r->gz, &zerr) : NULL;
        if (got < 0 || (got == 0 && zerr != Z_OK))
            return xr_errf(e, "%s: truncated or corrupt gzip data after line %lld (zlib: %s)", r->path,
                           (long long)r->line, zmsg && *zmsg ? zmsg : "read error");
        if (got == 0) r->eof = 1;
        r->end += (size_t)got;
    }
}
