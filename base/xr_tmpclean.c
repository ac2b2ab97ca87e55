/* xr_tmpclean.c: removal of registered temporary outputs on SIGINT / SIGTERM / SIGHUP (xr_tmpclean.h). The
 * handler lists a directory with the getdents64 system call and removes entries with unlinkat and rmdir (openat
 * for subdirectories, never following links): no opendir (it allocates), nothing that is not async-signal-safe. */
#define _GNU_SOURCE
#include "xr_tmpclean.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "xr_common.h"
#include "xr_fs.h"

static char g_path[XR_TMPCLEAN_MAX][PATH_MAX];
static volatile sig_atomic_t g_used[XR_TMPCLEAN_MAX];
static int g_installed;

/* The layout getdents64 fills (linux_dirent64). */
struct tc_dirent64 {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Remove the entries of the open directory fd, descending into subdirectories (the old copy of a dataset may hold
 * mine's embeddings/ cache) up to depth 16: each is opened relative to its parent with O_NOFOLLOW, so a symbolic
 * link is unlinked, never followed out of the tree. A 4 KiB buffer per level: 64 KiB of stack at most. */
static void tc_clear(int fd, int depth) {
    char buf[4096] __attribute__((aligned(8)));
    long n;
    while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct tc_dirent64 *d = (struct tc_dirent64 *)(buf + off);
            off += d->d_reclen;
            if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")) continue;
            if (unlinkat(fd, d->d_name, 0) == 0 || errno != EISDIR || depth >= 16) continue;
            int sub = openat(fd, d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) continue;
            tc_clear(sub, depth + 1);
            close(sub);
            unlinkat(fd, d->d_name, AT_REMOVEDIR);
        }
    }
}

static void tc_remove(const char *path) {
    if (unlink(path) == 0 || errno == ENOENT) return;
    /* a directory: its entries, then itself (a writer thread may add a file meanwhile: a few passes) */
    for (int pass = 0; pass < 4; pass++) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) return;
        tc_clear(fd, 0);
        close(fd);
        if (rmdir(path) == 0 || errno == ENOENT) return;
    }
}

/* Held by a commit (xr_tmpclean_hold), and the signal that came meanwhile. Atomics, as the handler may run on any
 * thread: it stores g_pending before it reads g_hold, release clears g_hold before it reads g_pending, so one of
 * the two always acts (both may: removing twice and raising twice are harmless). */
static int g_hold, g_pending;

static void tc_finish(int sig) {
    int saved = errno;
    for (int i = 0; i < XR_TMPCLEAN_MAX; i++)
        if (g_used[i]) tc_remove(g_path[i]);
    errno = saved;
    signal(sig, SIG_DFL); /* end the process as the signal would have */
    raise(sig);
}

static void tc_on_signal(int sig) {
    __atomic_store_n(&g_pending, sig, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&g_hold, __ATOMIC_SEQ_CST)) return; /* a commit is swapping names: release acts */
    tc_finish(sig);
}

void xr_tmpclean_hold(void) { __atomic_store_n(&g_hold, 1, __ATOMIC_SEQ_CST); }

void xr_tmpclean_release(void) {
    __atomic_store_n(&g_hold, 0, __ATOMIC_SEQ_CST);
    int sig = __atomic_load_n(&g_pending, __ATOMIC_SEQ_CST);
    if (sig) tc_finish(sig);
}

static void tc_install(void) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) || old.sa_handler != SIG_DFL) continue; /* ignored, or someone's */
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = tc_on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
    g_installed = 1;
}

int xr_tmpclean_add(const char *path) {
    size_t n = strlen(path);
    if (n >= PATH_MAX) return -1;
    for (int i = 0; i < XR_TMPCLEAN_MAX; i++) {
        if (g_used[i]) continue;
        memcpy(g_path[i], path, n + 1);
        g_used[i] = 1; /* after the path is whole: the handler reads it only then */
        if (!g_installed) tc_install();
        return 0;
    }
    return -1;
}

void xr_tmpclean_forget(const char *path) {
    for (int i = 0; i < XR_TMPCLEAN_MAX; i++)
        if (g_used[i] && !strcmp(g_path[i], path)) g_used[i] = 0;
}

/* This host's name as temporary names carry it (no '/'; "" when unknown). */
static void tc_host(char *h, size_t n) {
    if (gethostname(h, n)) h[0] = 0;
    h[n - 1] = 0;
    for (char *c = h; *c; c++)
        if (*c == '/') *c = '_';
}

char *xr_tmpclean_name(const char *out) {
    char host[256];
    tc_host(host, sizeof host);
    size_t n = strlen(out) + strlen(host) + 40;
    char *tmp = xr_malloc(n);
    snprintf(tmp, n, "%s.tmp.%s.%ld", out, host, (long)getpid());
    return tmp;
}

/* HOST.PID after a temporary name's prefix: the PID (0 when the rest is not such a name: not one of ours), whether
 * HOST is this host (0 for the old PID-only names) and whether that process is gone (same host only). */
static long tc_owner(const char *rest, const char *host, int *same_host, int *dead) {
    const char *dot = strrchr(rest, '.');
    const char *pid_s = dot ? dot + 1 : rest;
    char *end;
    long pid = strtol(pid_s, &end, 10);
    if (*end || end == pid_s || pid <= 0) return 0;
    *same_host = dot && (size_t)(dot - rest) == strlen(host) && !strncmp(rest, host, strlen(host));
    *dead = *same_host && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    return pid;
}

/* One entry of a sweep: a name PREFIX + HOST.PID in the output's directory (PID > 0: one of ours), its path as the
 * output is named (joined with the directory only when out has one), its owner and that owner's state. */
typedef struct {
    const char *path;
    long pid;
    int same_host, dead, mine; /* mine: this process on this host */
} TcEntry;

/* The one directory scan of both sweeps: visit(entry, ctx) for each entry of parent named prefix + HOST.PID.
 * visit may remove the entry (readdir goes on); path lives until visit returns. */
static void tc_scan(const char *parent, int in_dir, const char *prefix, const char *host,
                    void (*visit)(const TcEntry *en, void *ctx), void *ctx) {
    size_t pl = strlen(prefix);
    DIR *d = opendir(parent);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (strncmp(de->d_name, prefix, pl)) continue;
        TcEntry en = {0};
        en.pid = tc_owner(de->d_name + pl, host, &en.same_host, &en.dead);
        if (en.pid == 0) continue; /* not one of ours */
        en.mine = en.same_host && en.pid == (long)getpid();
        char *p = in_dir ? xr_path_join(parent, de->d_name) : xr_strdup(de->d_name);
        en.path = p;
        visit(&en, ctx);
        free(p);
    }
    if (d) closedir(d);
}

/* Append ", item" (no comma first) to list (its length in *len) while there is room. */
static void tc_list_add(char *list, size_t size, size_t *len, int first, const char *item) {
    if (*len < size) *len += (size_t)snprintf(list + *len, size - *len, "%s%s", first ? "" : ", ", item);
}

/* What the .old. sweep found: this host's dead writers' copies (up to 16), and the others, named. */
typedef struct {
    char *dead_p[16];
    int ndead, kept;
    char kept_s[1024];
    size_t kl;
} TcOldScan;

static void tc_visit_old(const TcEntry *en, void *ctx) {
    TcOldScan *o = ctx;
    if (en->mine) return;
    if (en->dead && o->ndead < 16) {
        o->dead_p[o->ndead++] = xr_strdup(en->path);
        return;
    }
    o->kept++;
    tc_list_add(o->kept_s, sizeof o->kept_s, &o->kl, o->kept == 1, en->path);
}

/* What the .tmp. sweep did: dead writers' temporary outputs removed, the others named in note. */
typedef struct {
    char *note;
    size_t note_len, used;
    int removed, kept;
} TcTmpScan;

static void tc_visit_tmp(const TcEntry *en, void *ctx) {
    TcTmpScan *t = ctx;
    if (en->dead && xr_remove_tree(en->path) == 0) {
        t->removed++;
    } else if (!en->mine) {
        t->kept++;
        tc_list_add(t->note, t->note_len, &t->used, t->kept == 1, en->path);
    }
}

/* out.old.HOST.PID: the earlier output that the two-rename commit (tc_swap_two_renames) moved aside, left by a SIGKILL
 * between its renames (then there is no out: the old copy is the last complete output) or before its removal (out
 * is the new one). A dead writer's on this host: put back as out when out is missing (the newest, by the rename's
 * ctime), removed when out exists. Others (a live process's: a commit in progress; another host's; names without a
 * host) are named, not touched. Appends what was done to note (used: its length so far). */
static void tc_sweep_old(const char *out, const char *parent, const char *base, int in_dir, const char *host,
                         char *note, size_t note_len, size_t used) {
    char prefix[1024];
    snprintf(prefix, sizeof prefix, "%s.old.", base);
    struct stat st;
    int have_out = lstat(out, &st) == 0, removed = 0;
    TcOldScan o = {.ndead = 0};
    tc_scan(parent, in_dir, prefix, host, tc_visit_old, &o);
    char **dead_p = o.dead_p;
    int ndead = o.ndead;
    int back = -1; /* the copy put back as out */
    if (!have_out && ndead) {
        double newest = -1;
        for (int i = 0; i < ndead; i++)
            if (lstat(dead_p[i], &st) == 0 && (double)st.st_ctim.tv_sec + 1e-9 * (double)st.st_ctim.tv_nsec > newest)
                newest = (double)st.st_ctim.tv_sec + 1e-9 * (double)st.st_ctim.tv_nsec, back = i;
        if (back >= 0 && rename(dead_p[back], out) != 0) back = -1;
        have_out = back >= 0;
    }
    for (int i = 0; i < ndead; i++) {
        if (i != back && have_out && xr_remove_tree(dead_p[i]) == 0) removed++;
        else if (i != back) { /* out missing and nothing put back: say where the earlier output is */
            o.kept++;
            tc_list_add(o.kept_s, sizeof o.kept_s, &o.kl, o.kept == 1, dead_p[i]);
        }
    }
    const char *sep = used ? "; " : "";
    if (back >= 0 && used < note_len)
        used += (size_t)snprintf(note + used, note_len - used, "%sput back %s from %s: the complete earlier output, "
                                 "moved aside by a run killed while replacing it (before its new output was in place)",
                                 sep, out, dead_p[back]), sep = "; ";
    if (removed && used < note_len)
        used += (size_t)snprintf(note + used, note_len - used, "%sremoved %d earlier cop%s of %s left aside by runs "
                                 "killed while replacing it", sep, removed, removed > 1 ? "ies" : "y", out), sep = "; ";
    if (o.kept && used < note_len) {
        if (have_out)
            snprintf(note + used, note_len - used, "%s%s left by %s: not removed (an xrank command may still be "
                     "replacing %s; remove it by hand if none is)", sep, o.kept_s,
                     o.kept > 1 ? "processes still running or other hosts" : "a process still running or another host",
                     out);
        else
            snprintf(note + used, note_len - used, "%s%s is missing; %s hold%s the earlier output, moved aside by a "
                     "run replacing it (a process still running or another host): if no xrank command is writing %s, "
                     "rename the newest back to %s", sep, out, o.kept_s, o.kept > 1 ? "" : "s", out, out);
    }
    for (int i = 0; i < ndead; i++) free(dead_p[i]);
}

void xr_tmpclean_sweep(const char *out, char *note, size_t note_len) {
    if (note_len) note[0] = 0;
    const char *slash = strrchr(out, '/');
    char *parent = slash ? xr_strdup(out) : xr_strdup(".");
    if (slash) parent[slash - out + (slash == out)] = 0; /* "/x" -> "/" */
    const char *base = slash ? slash + 1 : out;
    char prefix[1024], host[256];
    snprintf(prefix, sizeof prefix, "%s.tmp.", base);
    tc_host(host, sizeof host);
    TcTmpScan t = {.note = note, .note_len = note_len};
    tc_scan(parent, slash != NULL, prefix, host, tc_visit_tmp, &t);
    size_t used = t.used;
    int removed = t.removed, kept = t.kept;
    if (kept && used < note_len) {
        char list[2048];
        snprintf(list, sizeof list, "%s", note);
        snprintf(note, note_len, "%s%s left by %s: not removed (an xrank command may still be writing it; remove it "
                                 "by hand if none is)", removed ? "removed the temporary output of an earlier run "
                                                                  "that died; " : "", list,
                 kept == 1 ? "a process that is still running or another host" : "processes still running or other hosts");
    } else if (removed) {
        snprintf(note, note_len, "removed %d temporary output%s of %s left by earlier runs that died (process gone on "
                                 "this host)", removed, removed > 1 ? "s" : "", out);
    }
    used = note_len ? strlen(note) : 0;
    tc_sweep_old(out, parent, base, slash != NULL, host, note, note_len, used);
    free(parent);
}

/* The two-rename swap where the file system cannot exchange names (NFS, old kernels: EINVAL, ENOSYS, ENOTSUP):
 * out moved to out.old.PID, tmp renamed to out (undone when that fails), the old copy then garbage. Under hold. */
static int tc_swap_two_renames(const char *tmp, const char *out, int pause, char **garbage, XrErr *e) {
    char host[256];
    tc_host(host, sizeof host);
    size_t n = strlen(out) + strlen(host) + 40;
    char *old = xr_malloc(n);
    snprintf(old, n, "%s.old.%s.%ld", out, host, (long)getpid()); /* with the host, as xr_tmpclean_sweep needs */
    if (rename(out, old) != 0) {
        int rc = xr_errf(e, "cannot move the old %s aside: %s", out, strerror(errno));
        free(old);
        return rc;
    }
    if (pause) xr_tmpclean_test_pause("commit", tmp);
    if (rename(tmp, out) != 0) {
        int rc = xr_errf(e, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
        rename(old, out);
        free(old);
        return rc;
    }
    xr_tmpclean_forget(tmp);
    xr_tmpclean_add(old); /* the earlier copy is garbage now: a signal removes it */
    *garbage = old;
    return 0;
}

int xr_tmpclean_commit_dir(const char *tmp, const char *out, XrErr *e) {
    struct stat st;
    int had = lstat(out, &st) == 0, rc = 0;
    char *garbage = NULL; /* the earlier copy once the new one is in place, still registered */
    const char *no_exchange = getenv("XR_TEST_NO_RENAME_EXCHANGE"); /* test hook: the fallback on any file system */
    xr_tmpclean_hold(); /* a signal from here waits for the swap (or its undoing) */
    if (!had) {
        xr_tmpclean_test_pause("commit", tmp);
        if (rename(tmp, out) != 0) rc = xr_errf(e, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
        else xr_tmpclean_forget(tmp);
    } else {
        /* one atomic exchange: out is the old copy or the new one at every instant, so even SIGKILL (mpirun's, a
         * few milliseconds after its SIGTERM) leaves a complete out; tmp then names the old copy, still
         * registered, and xr_tmpclean_sweep removes it after a SIGKILL */
        int exchange = !(no_exchange && no_exchange[0] == '1'), paused = exchange;
        if (exchange) {
            xr_tmpclean_test_pause("commit", tmp);
            if (renameat2(AT_FDCWD, tmp, AT_FDCWD, out, RENAME_EXCHANGE) == 0) {
                garbage = xr_strdup(tmp);
                xr_tmpclean_test_pause("exchanged", tmp);
            } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) { /* = EOPNOTSUPP on Linux */
                exchange = 0;
            } else {
                rc = xr_errf(e, "cannot exchange %s with the earlier %s: %s", tmp, out, strerror(errno));
            }
        }
        if (rc == 0 && !exchange) rc = tc_swap_two_renames(tmp, out, !paused, &garbage, e);
    }
    xr_tmpclean_release();
    if (garbage) {
        if (xr_remove_tree(garbage) != 0) /* the whole old tree: a dataset may hold mine's embeddings/ cache */
            rc = xr_errf(e, "%s written, but its earlier copy, now %s, could not be removed: %s", out, garbage,
                         strerror(errno));
        xr_tmpclean_forget(garbage);
        free(garbage);
    }
    if (rc == 0) { /* copies moved aside by earlier commits killed between their renames: out is in place now */
        char note[2048];
        xr_tmpclean_sweep(out, note, sizeof note);
    }
    return rc;
}

void xr_tmpclean_test_pause(const char *where, const char *path) {
    const char *at = getenv("XR_TEST_PAUSE_AT");
    if (!at || strcmp(at, where)) return;
    fprintf(stderr, "xrank: XR_TEST_PAUSE_AT=%s: paused with %s present (pid %ld)\n", where, path, (long)getpid());
    fflush(stderr);
    /* 60 s in 0.1 s steps. A handled signal ends the process or, under a commit's hold, the wait; so does one the
     * handler took on another thread (an MPI or OpenMP thread: this thread's sleep is then not interrupted, and
     * mpirun's SIGKILL would come before the 60 s are over), seen in g_pending */
    for (int i = 0; i < 600 && !__atomic_load_n(&g_pending, __ATOMIC_SEQ_CST); i++) {
        struct timespec ts = {0, 100000000L};
        if (nanosleep(&ts, NULL) != 0) break;
    }
}
