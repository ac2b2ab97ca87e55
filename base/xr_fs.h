/* xr_fs.h: file and directory helpers every layer shares: whole-file writes and copies (optionally fsync'd),
 * flat directories (ours hold plain files only) and fsync by path. Errors name the path. */
#ifndef XR_FS_H
#define XR_FS_H
#include <stddef.h>
#include <stdio.h>

#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Read an open stream to its end (name is what an error calls it); like xr_read_file. */
char *xr_read_stream(FILE *f, const char *name, size_t *len, XrErr *e);
/* Write n bytes to path (created or truncated); sync: fsync before close. 0, or -1 with e naming path. */
int xr_write_file(const char *path, const void *data, size_t n, int sync, XrErr *e);
/* Copy src to dst whole (dst created or truncated); sync as in xr_write_file. */
int xr_copy_file(const char *src, const char *dst, int sync, XrErr *e);
int xr_is_dir(const char *path);
/* 1 when path is a directory with no entries but . and .. */
int xr_dir_is_empty(const char *path);
/* Remove the plain files of a directory (one level), then the directory; -1 when it is still there. */
int xr_remove_flat_dir(const char *dir);
/* Remove path: a file, a symbolic link (not what it points to) or a directory with everything below it. Links are
 * never followed, at the top or below (each level is opened relative to its parent with O_NOFOLLOW), so nothing
 * outside the tree is touched. 0 also when path does not exist; -1 (errno set: the first failure) when something
 * could not be removed. */
int xr_remove_tree(const char *path);
/* fsync a file or a directory by path; -1 (errno set) when it cannot be opened or synced. A directory's fsync
 * makes a rename inside it durable; some file systems refuse it, so callers treat that as best effort. */
int xr_fsync_path(const char *path);
/* The shortest %g form of v that reads back as the same float (6 to 9 digits); "null" when not finite, as
 * JSON writers want it. Returns buf. */
char *xr_float_str(char buf[32], float v);

#ifdef __cplusplus
}
#endif
#endif
