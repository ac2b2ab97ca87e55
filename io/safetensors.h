/* safetensors.h: read and write Hugging Face safetensors files.
 * Reading validates as strictly as the reference reader (header bound, offsets tiling the data buffer,
 * shapes matching byte sizes, file size); every violation is an XrErr naming the file and tensor. */
#ifndef XR_SAFETENSORS_H
#define XR_SAFETENSORS_H
#include "xr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } StDtype;

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;      /* byte offsets relative to the data section, end exclusive */
    const unsigned char *data; /* points into the mapped file */
} StTensor;

typedef struct {
    char *path;
    int n;
    StTensor *tensors;   /* in file order of data offsets */
    char *metadata_json; /* the "__metadata__" object as JSON text, or NULL */
    void *map;
    size_t map_len;
} SafeTensors;

/* Open and validate; returns 0, or -1 with e filled (nothing to free on failure). */
int st_open(SafeTensors *st, const char *path, XrErr *e);
void st_close(SafeTensors *st);
const StTensor *st_find(const SafeTensors *st, const char *name);
int64_t st_numel(const StTensor *t);
size_t st_dtype_size(StDtype d);
const char *st_dtype_name(StDtype d);
int st_is_float(StDtype d);
/* Convert a float tensor (F32/F16/BF16/F64) to f32 into out[numel]. */
int st_to_f32(const StTensor *t, float *out, XrErr *e);

/* Writer: tensors are given as f32 host arrays and stored as F32 (or BF16 when bf16 != 0). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
} StWriteTensor;
/* Writes to path + ".tmp" then renames; metadata is a flat list of key/value string pairs (may be NULL). */
int st_write(const char *path, const StWriteTensor *t, int n, const char *const *meta_kv, int n_meta, int bf16,
             XrErr *e);

#ifdef __cplusplus
}
#endif
#endif
