/* h5_internal.h: what h5util.c, h5store.c and h5inspect.c share inside io/ with hid_t in the signatures (not a
 * public header: it includes hdf5.h). */
#ifndef XR_H5_INTERNAL_H
#define XR_H5_INTERNAL_H
#include <hdf5.h>
#include <stdint.h>

#include "h5util.h"

/* -1 with e filled when nelem elements of d's file type overflow or cannot fit the bytes the file stores for d
 * (a damaged extent). */
int h5_check_stored(hid_t d, uint64_t nelem, const char *file, const char *name, XrErr *e);
/* The length of a 1-D dataset (checked with h5_check_stored); -1 with e filled when it is not 1-D. */
int h5_extent_1d(hid_t d, int64_t *n, const char *file, const char *name, XrErr *e);
/* Pack n strings (lengths lens, sources src[i] of lens[i] bytes) into one allocation: pointers then bytes. */
char **h5_pack_strings(int64_t n, const size_t *lens, const char *const *src);
/* Read elements [i, i + cnt) of a 1-D string dataset (fixed or variable length) as C strings. */
char **h5_read_strings_sel(hid_t d, int64_t i, int64_t cnt, const char *file, const char *name, XrErr *e);
/* Read tokens [a, b) of a 1-D int32 token dataset into dst (h5store.c). */
int h5_read_tokens(int64_t tokens, int64_t a, int64_t b, int32_t *dst, const char *file, XrErr *e);

#endif
