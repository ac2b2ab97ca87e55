/* xr_tmpclean.h: temporary outputs removed when SIGINT, SIGTERM or SIGHUP ends the process (Ctrl-C, mpirun
 * forwarding a Ctrl-C as SIGTERM, a closed terminal), so an interrupted command leaves no OUT.tmp.* behind. The
 * handler removes each registered file or flat directory with async-signal-safe calls only, then lets the
 * signal end the process as it would have (the exit status still says which signal). A signal the process was
 * started ignoring (nohup) stays ignored. The registry is process-wide state, as a signal handler needs. */
#ifndef XR_TMPCLEAN_H
#define XR_TMPCLEAN_H

#ifdef __cplusplus
extern "C" {
#endif

/* Register path (a file or a directory holding plain files); the handlers are installed on first use. 0, or -1
 * when the table is full (XR_TMPCLEAN_MAX paths) or path is too long: the output is then just not cleaned. */
int xr_tmpclean_add(const char *path);
/* Forget path (committed by a rename, or removed by its writer). */
void xr_tmpclean_forget(const char *path);

#define XR_TMPCLEAN_MAX 8

#ifdef __cplusplus
}
#endif
#endif
