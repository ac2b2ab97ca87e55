/* run_dir.h: the lifecycle of a training output directory (`xrank train --output DIR`). A run's entries are
 * metrics.jsonl, final/, best/, checkpoint-<step>/ and latest (and their staging names); anything else in DIR is
 * the user's and never touched. Outputs of two runs are never mixed: --overwrite moves the earlier complete run
 * into DIR/replaced-run/ and deletes it only when the new run completes (or puts it back when the new run fails
 * before writing a checkpoint). A run that left nothing usable (no model, no checkpoint: only a metrics.jsonl)
 * does not block the next one; an unfinished run with checkpoints says how to resume it. Rank 0 only. */
#ifndef XR_RUN_DIR_H
#define XR_RUN_DIR_H
#include "xr_common.h"

#define RUN_DIR_REPLACED "replaced-run"

/* Before a run writes anything: refuse or clear DIR as the rules above say (created when missing). resuming:
 * the run continues a checkpoint of DIR (nothing is moved). A line for the user, when something was removed or
 * set aside, goes to note (may stay empty). 0, or -1 with e saying what DIR holds and what to do. */
int run_dir_prepare(const char *dir, int overwrite, int resuming, char *note, size_t note_len, XrErr *e);
/* After final/ is written: the replaced run (if any) is deleted. */
int run_dir_commit(const char *dir, XrErr *e);
/* After a run failed with an error. With a replaced run set aside: when the failed run committed no checkpoint,
 * its entries are removed and the replaced run put back; otherwise both stay and note says how to resume. Without
 * one, the failed run's entries stay (metrics.jsonl says why it failed; alone it blocks no rerun). */
void run_dir_abandon(const char *dir, char *note, size_t note_len);

#endif
