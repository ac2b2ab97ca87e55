/* xr_progress.h: the progress of a long command on stderr (rank 0 only; the caller decides). On a terminal one
 * line redrawn in place (at most 4 times a second); otherwise (a batch job's log, mpirun's forwarded stderr) a
 * plain line every XRANK_PROGRESS_SECONDS seconds (30 by default; 0 = none), so that a log shows the job is
 * alive and when it will end. Each line: what, done/total (percent), rate, elapsed, time left, and the caller's
 * extra text. */
#ifndef XR_PROGRESS_H
#define XR_PROGRESS_H
#include <stdint.h>

typedef struct {
    char what[64];   /* "xrank train: step", "xrank mine: embedding passages" */
    const char *unit; /* of the rate: "steps", "texts" */
    int64_t total;
    int64_t base;    /* done at the start (a resumed run): the rate and time left count from here */
    double t0, last, every; /* every: seconds between lines (0.25 on a terminal) */
    int on, tty, shown;     /* shown: a terminal line is on screen (end erases it) */
} XrProgress;

/* Start counting now; on = 0 makes every call a no-op (other ranks, --quiet). */
void xr_progress_begin(XrProgress *p, int on, const char *what, const char *unit, int64_t total);
/* Report `done` of total; extra (may be NULL) is appended. Prints only when the interval has passed (and, off a
 * terminal, once more at done == total when the phase lasted longer than one interval). */
void xr_progress_update(XrProgress *p, int64_t done, const char *extra);
/* Clear the terminal line before other output (a later update draws it again). */
void xr_progress_clear(XrProgress *p);
/* The phase ended: clear the terminal line. */
void xr_progress_end(XrProgress *p);
/* "1h02m", "3m10s", "12s" */
void xr_fmt_duration(char *buf, int n, double seconds);

#endif
