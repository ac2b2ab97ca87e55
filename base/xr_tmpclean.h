/* xr_tmpclean.h: temporary outputs removed when SIGINT, SIGTERM or SIGHUP ends the process (Ctrl-C, mpirun
 * forwarding a Ctrl-C as SIGTERM, a closed terminal), so an interrupted command leaves no OUT.tmp.* behind. The
 * handler removes each registered file or directory tree with async-signal-safe calls only, then lets the
 * signal end the process as it would have (the exit status still says which signal). A signal the process was
 * started ignoring (nohup) stays ignored. The registry is process-wide state, as a signal handler needs. */
#ifndef XR_TMPCLEAN_H
#define XR_TMPCLEAN_H

#include <stddef.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Register path (a file or a directory: subdirectories up to 16 deep are removed too, symbolic links are removed,
 * never followed); the handlers are installed on first use. 0, or -1 when the table is full (XR_TMPCLEAN_MAX
 * paths) or path is too long: the output is then just not cleaned. */
int xr_tmpclean_add(const char *path);
/* Forget path (committed by a rename, or removed by its writer). */
void xr_tmpclean_forget(const char *path);

#define XR_TMPCLEAN_MAX 8

/* A commit that replaces an earlier output swaps two names (out -> out.old.PID, then tmp -> out): a signal between
 * the two renames would remove tmp and leave no out at all. Between xr_tmpclean_hold and xr_tmpclean_release the
 * handler only notes the signal; release then removes what is still registered and ends the process by it (so a
 * committer forgets its tmp and registers the old copy, now garbage, before releasing). Not nested. */
void xr_tmpclean_hold(void);
void xr_tmpclean_release(void);
/* Put the finished temporary directory tmp (registered) in place as out, under xr_tmpclean_hold: an existing out
 * (a flat directory) is exchanged with tmp in one step (renameat2 RENAME_EXCHANGE), so out is complete at every
 * instant, even for a SIGKILL (mpirun sends one milliseconds after its SIGTERM); tmp then holds the old copy,
 * still registered, and is removed (after a SIGKILL, by the next run's xr_tmpclean_sweep). Where the file system
 * cannot exchange names (EINVAL, ENOSYS, ENOTSUP; or XR_TEST_NO_RENAME_EXCHANGE=1) out is moved to
 * out.old.HOST.PID, tmp renamed to out (the old copy put back when that fails) and the old copy removed: a SIGKILL
 * between the two renames leaves no out, only out.old.HOST.PID, which the next xr_tmpclean_sweep of out puts back
 * (or removes, when out exists; so does every later commit of out). 0, or -1 with e naming the step that failed (out
 * is then in place when only the old copy's removal failed). Test hooks: XR_TEST_PAUSE_AT=commit pauses before the
 * exchange (between the two renames), =exchanged after the exchange. */
int xr_tmpclean_commit_dir(const char *tmp, const char *out, XrErr *e);

/* The temporary name of output out: out.tmp.HOST.PID (malloc'd; '/' in the host name becomes '_'). A PID means
 * nothing on another host (a shared file system), hence the host, so xr_tmpclean_sweep can tell a dead
 * writer's leftovers from a live one's. */
char *xr_tmpclean_name(const char *out);
/* Temporary outputs of earlier runs that died without cleaning up (SIGKILL, a crash: no handler ran):
 * out.tmp.HOST.PID of this host whose process no longer exists (kill(PID, 0) fails with ESRCH) are removed
 * (files or directories). An earlier output moved aside by a commit killed between its two renames,
 * out.old.HOST.PID of a dead process on this host, is put back as out when out is missing (the newest of them; it is
 * the last complete output: the new one never got in place) and removed when out exists. Others (another host's, a
 * live process's, the old names without a host) are named in note, not touched; a missing out is said with where its
 * earlier copy is. note (may stay empty) says what was done. Call it before checking whether out exists. */
void xr_tmpclean_sweep(const char *out, char *note, size_t note_len);
/* Test hook: when the environment variable XR_TEST_PAUSE_AT equals where, say so on stderr (naming path, the
 * temporary output that now exists) and wait up to 60 s (a signal ends the wait), so a test can send a signal
 * while the temporary output exists, however fast or slow the machine. Does nothing otherwise. */
void xr_tmpclean_test_pause(const char *where, const char *path);

#ifdef __cplusplus
}
#endif
#endif
