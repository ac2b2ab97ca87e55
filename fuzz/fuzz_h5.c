/* fuzz_h5.c: HDF5 files of arbitrary bytes (seeded with real shards, index files and group files, which
 * byte-level mutation damages as a disk or a transfer would) through what inspect, mine and train read: a shard
 * scan, the dataset index, the shard table, and a group file with its validation, each behind the checksum record
 * check (io/h5sum.c; read_all says how both sides of it are reached). Hangs count as failures (libFuzzer
 * -timeout): the readers must not loop on any file.
 *
 * libhdf5 1.10.8 itself faults on some damaged files before any reader can check them (a SIGFPE in H5Dopen2 on a
 * zero chunk dimension, SIGSEGVs in its header parsers: docs/RELIABILITY.md, "Fuzzing"). Left alone, each such
 * input ends the libFuzzer run, and once the corpus holds inputs near one, runs end within a few inputs. So a
 * SIGFPE / SIGSEGV / SIGBUS whose faulting instruction is inside libhdf5 (or in libc's memcpy / memmove / memset
 * called from libhdf5) returns to this input's start
 * (siglongjmp), libhdf5 is shut down (H5close: every id of the damaged file goes) and the input counts as done; a
 * fault anywhere else goes to the handler that was there before (libFuzzer's / ASan's report). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <hdf5.h>
#include <sanitizer/allocator_interface.h>
#include <sanitizer/lsan_interface.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "dataset.h"
#include "fuzz_util.h"
#include "groups.h"
#include "h5store.h"

#if defined(__x86_64__) && defined(__linux__)
#define XF_RECOVER 1
static sigjmp_buf g_jmp;
static volatile sig_atomic_t g_armed;
static pid_t g_pid; /* the fuzzer's own process */
static struct sigaction g_prev[3];
static const int g_sigs[3] = {SIGFPE, SIGSEGV, SIGBUS};


/* What a recovered input abandons: the blocks it allocated and did not free (ours and libhdf5's), tracked by the
 * sanitizer malloc hooks while an input runs, are handed to LeakSanitizer as ignored at recovery, so no later leak
 * check reports them as a leak of some other input. An open-addressing set of live blocks; an entry of an earlier
 * input (older generation) is free. Should an input outgrow it, tracking stops for that input and run_fuzz.sh's
 * classification of leak reports after a recovery is what is left. */
#define XF_TRACK_SLOTS (1u << 20)
#define XF_TOMB ((uintptr_t)1)
/* kept inverted: LeakSanitizer scans globals for pointers, and a plain copy here would keep every block reachable */
#define XF_HIDE(p) (~(uintptr_t)(p))
static struct {
    uintptr_t p;
    uint32_t gen;
} g_live[XF_TRACK_SLOTS];
static uint32_t g_gen = 1;
static volatile sig_atomic_t g_tracking, g_overflow;

static uint32_t slot_of(uintptr_t p) {
    return (uint32_t)((p >> 4) * 0x9E3779B97F4A7C15ull >> 44) & (XF_TRACK_SLOTS - 1);
}

static void on_malloc(const volatile void *ptr, size_t size) {
    (void)size;
    if (!g_tracking || !ptr) return;
    uint32_t k = slot_of((uintptr_t)ptr);
    for (uint32_t n = 0; n < XF_TRACK_SLOTS; n++, k = (k + 1) & (XF_TRACK_SLOTS - 1))
        if (g_live[k].gen != g_gen) {
            g_live[k].p = XF_HIDE(ptr), g_live[k].gen = g_gen;
            return;
        }
    g_overflow = 1;
}

static void on_free(const volatile void *ptr) {
    if (!g_tracking || !ptr) return;
    uint32_t k = slot_of((uintptr_t)ptr);
    for (uint32_t n = 0; n < XF_TRACK_SLOTS && g_live[k].gen == g_gen; n++, k = (k + 1) & (XF_TRACK_SLOTS - 1))
        if (g_live[k].p == XF_HIDE(ptr)) {
            g_live[k].p = XF_TOMB;
            return;
        }
}

/* At recovery: every block this input still holds is abandoned, not leaked. */
static void ignore_abandoned(void) {
    g_tracking = 0;
    for (uint32_t k = 0; k < XF_TRACK_SLOTS; k++)
        if (g_live[k].gen == g_gen && g_live[k].p != XF_TOMB)
            __lsan_ignore_object((const void *)XF_HIDE(g_live[k].p));
}

static int in_lib(const void *pc, const char *lib) {
    Dl_info i;
    return dladdr(pc, &i) && i.dli_fname && strstr(i.dli_fname, lib);
}

/* The fault is libhdf5's: its instruction is in libhdf5, or in libc's memcpy / memmove / memset reached from
 * libhdf5 through ASan's interceptor. backtrace() here starts with this handler's own frames (static functions of
 * this file, which dladdr cannot name), then the signal trampoline (libc's __restore_rt), the faulting libc routine
 * and the frames that called it: so the walk starts at the first libc frame, passes libc's frames and the
 * interceptors (named memcpy / memmove / memset), and the first other frame decides. */
static int libhdf5_fault(const void *pc) {
    if (in_lib(pc, "libhdf5")) return 1;
    if (!in_lib(pc, "libc.so")) return 0;
    void *fr[32];
    int n = backtrace(fr, 32), past = 0;
    for (int k = 0; k < n; k++) {
        Dl_info i;
        if (!dladdr(fr[k], &i) || !i.dli_fname) return 0;
        int libc = strstr(i.dli_fname, "libc.so") != NULL;
        if (!past) {
            past = libc;
            continue;
        }
        if (strstr(i.dli_fname, "libhdf5")) return 1;
        if (libc) continue;
        if (i.dli_sname && (strstr(i.dli_sname, "memcpy") || strstr(i.dli_sname, "memmove") ||
                            strstr(i.dli_sname, "memset")))
            continue;
        return 0;
    }
    return 0;
}

static void on_fault(int sig, siginfo_t *si, void *ctx) {
    const void *pc = (const void *)((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
    if (getpid() != g_pid) {
        /* a child the readers forked to read an attribute in isolation (io/h5util.c): it dies of the signal, as
         * it would in xrank, and its parent reports the file; jumping back would make it a second fuzzer */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (g_armed && libhdf5_fault(pc)) {
        g_armed = 0;
        siglongjmp(g_jmp, sig);
    }
    for (int k = 0; k < 3; k++) {
        if (g_sigs[k] != sig) continue;
        struct sigaction *p = &g_prev[k];
        if (p->sa_flags & SA_SIGINFO) {
            p->sa_sigaction(sig, si, ctx);
        } else if (p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN) {
            p->sa_handler(sig);
        } else {
            signal(sig, SIG_DFL);
            raise(sig);
        }
        return;
    }
}

static int g_recovered;
static void report(void) {
    if (g_recovered) fprintf(stderr, "fuzz_h5: libhdf5 faulted (a signal inside it) on %d inputs; went on\n", g_recovered);
}

static void install(void) {
    static int done;
    if (done) return;
    done = 1;
    g_pid = getpid();
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    atexit(report);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (int k = 0; k < 3; k++) sigaction(g_sigs[k], &sa, &g_prev[k]);
}
#endif

static void read_path(const char *p) {
    XrErr e;
    ShardScan s = {0};
    if (h5store_scan_shard(p, "passages", &s, &e) == 0) free(s.lens);
    DsIndex ix;
    if (ds_read_index(xf_dir(), &ix, &e) == 0) ds_index_free(&ix);
    char **files = NULL;
    int64_t *row_off = NULL, ntok = 0;
    int ns = 0;
    if (h5store_index_shards(p, "queries", &files, &row_off, &ns, &ntok, &e) == 0) free(files), free(row_off);
    GroupSet g;
    if (groups_read(p, &g, &e) == 0) groups_free(&g);
}

/* The input as it is: a file with a checksum record (sealed seeds) is checked by h5_verify, whose record parsing is
 * fuzzed too, and a mutation refused there never reaches libhdf5; a file without one (legacy seeds) goes to
 * libhdf5 and the structural checks. A mutated sealed file is then sealed again, as a writer bug rather than a disk
 * would leave it, so that its body reaches libhdf5 and the readers' own checks as well. */
static void read_all(const uint8_t *data, size_t n) {
    const char *p = xf_write("index.h5", data, n);
    read_path(p);
    XrErr e;
    if (n > H5_USERBLOCK_BYTES && !memcmp(data, H5SUM_MAGIC, 8) && h5_verify(p, NULL, &e) == H5SUM_DAMAGED &&
        h5_seal(p, &e) == 0)
        read_path(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
#ifdef XF_RECOVER
    install();
    if (sigsetjmp(g_jmp, 1) != 0) {
        /* libhdf5 faulted on this input: what the readers allocated for it is lost (a leak LeakSanitizer may
         * report at exit is then libhdf5's fault's, see run_fuzz.sh); shut the library down and go on */
        g_recovered++;
        if (!g_overflow) ignore_abandoned();
        g_tracking = 0;
        /* run_fuzz.sh reads this line: a leak report that follows it is this abandoned input's (libFuzzer runs a
         * leaking input twice more, the last time under LeakSanitizer, which reports right after this line) */
        fprintf(stderr, "fuzz_h5: libhdf5 faulted on this input; recovered\n");
        g_armed = 1;
        if (sigsetjmp(g_jmp, 1) == 0) H5close();
        g_armed = 0;
        return 0;
    }
    g_gen++, g_overflow = 0, g_tracking = 1;
    g_armed = 1;
#endif
    read_all(data, n);
#ifdef XF_RECOVER
    g_armed = 0;
    g_tracking = 0;
#endif
    return 0;
}
