/* ops_table.h: a backend's table of ops (internal to core/: the backends fill it, ops.c dispatches through it).
 * One function pointer per entry of ops_list.h, with ops_<name>'s exact type; NULL where the backend lacks
 * the op. */
#ifndef XR_OPS_TABLE_H
#define XR_OPS_TABLE_H
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct OpsTable {
#define XR_OP(set, name, params, args) void(*name) params;
#define XR_OP_RET(set, type, name, params, args) type(*name) params;
#include "ops_list.h"
#undef XR_OP
#undef XR_OP_RET
} OpsTable;

/* The allocation counter (ops_mem.c): each backend notes what its alloc / free (and scratch) hand out and take
 * back; ops_backend_free releases the table. */
void ops_mem_note_alloc(Backend *be, void *p, size_t bytes);
void ops_mem_note_free(Backend *be, void *p);
void ops_mem_release(Backend *be);

/* The ops of `sets` that table t lacks (see ops_backend_missing). */
int ops_table_missing(const OpsTable *t, unsigned sets, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
