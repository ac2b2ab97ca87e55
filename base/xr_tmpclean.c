/* xr_tmpclean.c: removal of registered temporary outputs on SIGINT / SIGTERM / SIGHUP (xr_tmpclean.h). The
 * handler lists a directory with the getdents64 system call and removes entries with unlinkat and rmdir: no
 * opendir (it allocates), nothing that is not async-signal-safe. */
#define _GNU_SOURCE
#include "xr_tmpclean.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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

static void tc_remove(const char *path) {
    if (unlink(path) == 0 || errno == ENOENT) return;
    /* a directory: its entries, then itself (a writer thread may add a file meanwhile: a few passes) */
    for (int pass = 0; pass < 4; pass++) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) return;
        char buf[4096] __attribute__((aligned(8)));
        long n;
        while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                struct tc_dirent64 *d = (struct tc_dirent64 *)(buf + off);
                if (strcmp(d->d_name, ".") && strcmp(d->d_name, "..")) unlinkat(fd, d->d_name, 0);
                off += d->d_reclen;
            }
        }
        close(fd);
        if (rmdir(path) == 0 || errno == ENOENT) return;
    }
}

static void tc_on_signal(int sig) {
    int saved = errno;
    for (int i = 0; i < XR_TMPCLEAN_MAX; i++)
        if (g_used[i]) tc_remove(g_path[i]);
    errno = saved;
    signal(sig, SIG_DFL); /* end the process as the signal would have */
    raise(sig);
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
