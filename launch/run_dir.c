/* run_dir.c: the lifecycle of a training output directory (run_dir.h): what a run's entries are, what an earlier
 * run left (complete, resumable, or nothing usable), setting a complete run aside under --overwrite and deleting
 * or restoring it when the new run ends. */
#define _POSIX_C_SOURCE 200809L
#include "run_dir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "xr_fs.h"
#include "xr_tmpclean.h"

/* Names a training run writes into its output directory (final/ and best/ are renamed into place from
 * NAME.tmp.HOST.PID, exchanged with the earlier one, or, where names cannot be exchanged, with the earlier one moved to
 * NAME.old.HOST.PID first; checkpoints from checkpoint-<step>.tmp). */
static int rd_is_run_entry(const char *n) {
    static const char *const exact[] = {"metrics.jsonl", "final", "best", CKPT_LATEST};
    static const char *const prefix[] = {"checkpoint-", "final.tmp.", "final.old.", "best.tmp.", "best.old.",
                                         RUN_DIR_REPLACED ".del."};
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
        if (!strcmp(n, exact[i])) return 1;
    for (size_t i = 0; i < sizeof prefix / sizeof *prefix; i++)
        if (!strncmp(n, prefix[i], strlen(prefix[i]))) return 1;
    return 0;
}

typedef struct {
    int final, best, metrics, replaced, other; /* other: staging names, latest */
    int nckpt;
    int64_t last_ckpt;
} RdState;

static void rd_scan(const char *dir, RdState *s) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (!strcmp(n, RUN_DIR_REPLACED)) s->replaced = 1;
        else if (!strcmp(n, "final")) s->final = 1;
        else if (!strcmp(n, "best")) s->best = 1;
        else if (!strcmp(n, "metrics.jsonl")) s->metrics = 1;
        else if (rd_is_run_entry(n)) s->other = 1;
    }
    closedir(d);
    int64_t *steps = NULL;
    s->nckpt = ckpt_list(dir, &steps);
    if (s->nckpt > 0) s->last_ckpt = steps[s->nckpt - 1];
    free(steps);
}

/* Apply fn to every run entry of dir (the list is read first: fn may rename or remove). Returns the first
 * failure (-1, errno set) after trying them all. */
static int rd_each_entry(const char *dir, int (*fn)(const char *dir, const char *name, void *ctx), void *ctx) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!rd_is_run_entry(de->d_name)) continue;
        names = xr_realloc(names, (n + 1) * sizeof *names);
        names[n++] = xr_strdup(de->d_name);
    }
    closedir(d);
    int rc = 0, err = 0;
    for (size_t i = 0; i < n; i++) {
        if (fn(dir, names[i], ctx) && !rc) rc = -1, err = errno;
        free(names[i]);
    }
    free(names);
    errno = err;
    return rc;
}

static int rd_remove_entry(const char *dir, const char *name, void *ctx) {
    (void)ctx;
    char *p = xr_path_join(dir, name);
    int rc = xr_remove_tree(p);
    free(p);
    return rc;
}

static int rd_move_entry(const char *dir, const char *name, void *ctx) {
    const char *to = ctx;
    char *a = xr_path_join(dir, name), *b = xr_path_join(to, name);
    int rc = rename(a, b);
    free(a), free(b);
    return rc;
}

/* Delete dir/replaced-run: renamed to a staging name first, so that a half-deleted one never looks like a run. */
static int rd_delete_replaced(const char *dir, XrErr *e) {
    char *rp = xr_path_join(dir, RUN_DIR_REPLACED);
    char del[64];
    snprintf(del, sizeof del, RUN_DIR_REPLACED ".del.%ld", (long)getpid());
    char *dp = xr_path_join(dir, del);
    int rc = 0;
    if (rename(rp, dp) && errno != ENOENT) rc = xr_errf(e, "cannot remove %s: %s", rp, strerror(errno));
    else if (xr_remove_tree(dp)) rc = xr_errf(e, "cannot remove %s: %s", dp, strerror(errno));
    free(rp), free(dp);
    return rc;
}

static int rd_prepare(const char *dir, int overwrite, int resuming, char *note, size_t note_len, XrErr *e);

int run_dir_prepare(const char *dir, int overwrite, int resuming, char *note, size_t note_len, XrErr *e) {
    /* final/ or best/ moved aside as NAME.old.HOST.PID by a commit killed between its two renames (file systems
     * that cannot exchange names): put back (no NAME) or removed (NAME in place) first, so what follows sees the run
     * as it was (xr_tmpclean_sweep; also removes a dead writer's NAME.tmp.HOST.PID) */
    char swept[2048] = "";
    size_t sl = 0;
    static const char *const names[] = {"final", "best"};
    for (int i = 0; i < 2; i++) {
        char one[1024], *p = xr_path_join(dir, names[i]);
        xr_tmpclean_sweep(p, one, sizeof one);
        free(p);
        if (one[0] && sl < sizeof swept)
            sl += (size_t)snprintf(swept + sl, sizeof swept - sl, "%s%s", sl ? "; " : "", one);
    }
    int rc = rd_prepare(dir, overwrite, resuming, note, note_len, e);
    if (swept[0] && note_len) {
        char rest[2048];
        snprintf(rest, sizeof rest, "%s", note);
        snprintf(note, note_len, "%s%s%s", swept, rest[0] ? "; " : "", rest);
    }
    return rc;
}

static int rd_prepare(const char *dir, int overwrite, int resuming, char *note, size_t note_len, XrErr *e) {
    struct stat st;
    if (note_len) note[0] = 0;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) return xr_errf(e, "output %s is a file, not a directory", dir);
    if (stat(dir, &st) != 0) {
        if (mkdir(dir, 0755)) return xr_errf(e, "cannot create output %s: %s", dir, strerror(errno));
        return 0;
    }
    if (resuming) return 0; /* the checkpoint continues the run that is here */
    RdState s;
    rd_scan(dir, &s);
    int leftovers = s.metrics || s.other || s.best || s.final || s.nckpt;
    if (!overwrite) {
        if (s.replaced)
            return xr_errf(e, "%s/%s holds the run that an unfinished --overwrite run was replacing: use --overwrite "
                              "to start the new run again (the replaced run is kept until a new one completes)%s",
                           dir, RUN_DIR_REPLACED, s.nckpt ? ", or --resume latest to continue it" : "");
        if (s.final)
            return xr_errf(e, "output %s already holds a run (final/): use --overwrite to replace it (the earlier run "
                              "is kept in %s/%s until the new one completes)", dir, dir, RUN_DIR_REPLACED);
        if (s.nckpt)
            return xr_errf(e, "output %s holds an unfinished run (checkpoint-%lld, no final/): continue it with "
                              "--resume latest, or use --overwrite to start over", dir, (long long)s.last_ckpt);
        if (s.best)
            return xr_errf(e, "output %s holds best/ of a run that did not complete (no final/, no checkpoint): use "
                              "--overwrite to replace it", dir);
        if (!leftovers) return 0;
        if (rd_each_entry(dir, rd_remove_entry, NULL))
            return xr_errf(e, "cannot clear %s: %s", dir, strerror(errno));
        snprintf(note, note_len, "%s held the log of an earlier run that wrote no model and no checkpoint: removed", dir);
        return 0;
    }
    if (s.replaced || !(s.final || s.best || s.nckpt)) {
        /* what is here is an unfinished replacement (the complete run stays aside) or produced nothing */
        if (leftovers && rd_each_entry(dir, rd_remove_entry, NULL))
            return xr_errf(e, "cannot clear %s: %s", dir, strerror(errno));
        if (s.replaced && leftovers)
            snprintf(note, note_len, "removed the unfinished run in %s; the earlier one stays in %s/%s until this "
                                     "run completes", dir, dir, RUN_DIR_REPLACED);
        return 0;
    }
    char *rp = xr_path_join(dir, RUN_DIR_REPLACED);
    int rc = 0;
    if (mkdir(rp, 0755)) rc = xr_errf(e, "cannot create %s: %s", rp, strerror(errno));
    else if (rd_each_entry(dir, rd_move_entry, rp)) rc = xr_errf(e, "cannot move the earlier run into %s: %s", rp, strerror(errno));
    if (rc == 0) {
        xr_fsync_path(dir); /* best effort: the moves are durable before the new run writes */
        snprintf(note, note_len, "the earlier run in %s is kept in %s until this one completes", dir, rp);
    }
    free(rp);
    return rc;
}

int run_dir_commit(const char *dir, XrErr *e) {
    char *rp = xr_path_join(dir, RUN_DIR_REPLACED);
    int had = xr_is_dir(rp);
    free(rp);
    return had ? rd_delete_replaced(dir, e) : 0;
}

void run_dir_abandon(const char *dir, char *note, size_t note_len) {
    if (note_len) note[0] = 0;
    RdState s;
    rd_scan(dir, &s);
    if (!s.replaced) return;
    char *rp = xr_path_join(dir, RUN_DIR_REPLACED);
    if (s.nckpt) {
        snprintf(note, note_len, "the failed run has checkpoint-%lld: continue it with --resume latest; the earlier "
                                 "run stays in %s until a run completes", (long long)s.last_ckpt, rp);
    } else if (rd_each_entry(dir, rd_remove_entry, NULL) || rd_each_entry(rp, rd_move_entry, (void *)dir) ||
               rmdir(rp)) {
        snprintf(note, note_len, "could not put the earlier run back (%s): it is in %s", strerror(errno), rp);
    } else {
        snprintf(note, note_len, "the earlier run is back in place in %s", dir);
    }
    free(rp);
}
