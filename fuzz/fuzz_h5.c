/* fuzz_h5.c: HDF5 files of arbitrary bytes (seeded with real shards, index files and group files, which
 * byte-level mutation damages as a disk or a transfer would) through what inspect, mine and train read: a shard
 * scan, the dataset index, the shard table, and a group file with its validation. Hangs count as failures
 * (libFuzzer -timeout): the readers must not loop on any file. */
#include <stdlib.h>

#include "dataset.h"
#include "fuzz_util.h"
#include "groups.h"
#include "h5store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    XrErr e;
    const char *p = xf_write("index.h5", data, n);
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
    return 0;
}
