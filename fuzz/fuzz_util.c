/* fuzz_util.c: scratch files for the fuzz targets (fuzz_util.h). */
#define _POSIX_C_SOURCE 200809L
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xr_fs.h"

static char g_dir[512];

static void xf_cleanup(void) { xr_remove_tree(g_dir); }

const char *xf_dir(void) {
    if (!g_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/xr_fuzz.%ld", t && *t ? t : "/tmp", (long)getpid());
        mkdir(g_dir, 0755);
        atexit(xf_cleanup);
    }
    return g_dir;
}

const char *xf_write(const char *name, const uint8_t *data, size_t n) {
    static char path[640];
    snprintf(path, sizeof path, "%s/%s", xf_dir(), name);
    unlink(path); /* a new file, not the old one truncated: a library may still hold the old one open */
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(data, 1, n, f) != n) abort();
    fclose(f);
    return path;
}

const char *xf_fixture(const char *rel) {
    static char path[640];
    snprintf(path, sizeof path, "%s/%s", XR_FUZZ_FIXTURES, rel);
    return path;
}
