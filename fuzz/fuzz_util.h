/* fuzz_util.h: what the libFuzzer targets share. The readers take paths, so each input is written to a file in a
 * scratch directory of this process ($TMPDIR/xr_fuzz.PID, removed at exit) under the name the reader expects. */
#ifndef XR_FUZZ_UTIL_H
#define XR_FUZZ_UTIL_H
#include <stddef.h>
#include <stdint.h>

/* The scratch directory (made on first use). */
const char *xf_dir(void);
/* Write data to xf_dir()/name (truncated first); returns the path (static storage, valid until the next call). */
const char *xf_write(const char *name, const uint8_t *data, size_t n);
/* A committed fixture: XR_FUZZ_FIXTURES (set by CMake) joined with rel (static storage). */
const char *xf_fixture(const char *rel);

#endif
