/* xr_progress.c: progress lines on stderr (see xr_progress.h). */
#include "xr_progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "xr_common.h"

void xr_fmt_duration(char *buf, int n, double s) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, (size_t)n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, (size_t)n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, (size_t)n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, (size_t)n, "%lds", t);
}

void xr_progress_begin(XrProgress *p, int on, const char *what, const char *unit, int64_t total) {
    memset(p, 0, sizeof *p);
    snprintf(p->what, sizeof p->what, "%s", what);
    p->unit = unit;
    p->total = total;
    p->on = on;
    p->t0 = xr_now();
    p->tty = isatty(2);
    if (p->tty) {
        p->every = 0.25;
    } else {
        const char *env = getenv("XRANK_PROGRESS_SECONDS");
        p->every = env && *env ? atof(env) : 30.0;
        if (p->every <= 0) p->on = 0;
    }
    p->last = p->t0;
}

void xr_progress_update(XrProgress *p, int64_t done, const char *extra) {
    if (!p->on) return;
    double now = xr_now();
    int final = done >= p->total && !p->tty;
    if (now - p->last < p->every && !(final && now - p->t0 >= p->every)) return;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? (double)(done - p->base) / el : 0;
    char eb[32], lb[32];
    xr_fmt_duration(eb, sizeof eb, el);
    if (done > p->base && p->total >= done)
        xr_fmt_duration(lb, sizeof lb, el / (double)(done - p->base) * (double)(p->total - done));
    else snprintf(lb, sizeof lb, "?");
    char line[512];
    snprintf(line, sizeof line, "%s %lld/%lld (%.0f%%), %.*f %s/s, elapsed %s, left %s%s%s", p->what,
             (long long)done, (long long)p->total, p->total > 0 ? 100.0 * (double)done / (double)p->total : 0.0,
             rate < 10 ? 2 : 1, rate, p->unit, eb, lb, extra && *extra ? ", " : "", extra ? extra : "");
    if (p->tty) {
        fprintf(stderr, "\r\033[K%s", line);
        p->shown = 1;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

void xr_progress_clear(XrProgress *p) {
    if (p->on && p->tty && p->shown) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
        p->shown = 0;
    }
}

void xr_progress_end(XrProgress *p) { xr_progress_clear(p); }
