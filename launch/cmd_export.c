/* cmd_export.c: `xrank export CKPT OUT`: a training checkpoint (io/ckpt.h, verified file by file) as a Hugging
 * Face model directory that transformers (AutoModelForSequenceClassification) and sentence-transformers
 * (CrossEncoder) load: config.json with the head and the sentence-transformers keys, model.safetensors
 * ({"format": "pt"}), the base model's tokenizer files. Built under a temporary name and renamed into place. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt.h"
#include "cli.h"
#include "cli_common.h"
#include "hfexport.h"
#include "xr_fs.h"
#include "xr_tmpclean.h"

static const ArgSpec EXPORT_FLAGS[] = {
    CLI_FLAG_OVERWRITE("replace OUT when it is a model directory"),
    {"activation", ARG_CHOICE, "none", "", "the activation sentence-transformers' CrossEncoder applies (none: the "
     "raw logit, as xrank score prints it by default)", "none|sigmoid", 0},
};
#define NFLAGS ((int)(sizeof EXPORT_FLAGS / sizeof EXPORT_FLAGS[0]))

static const ArgHelp EXPORT_HELP = {
    "Export a training checkpoint (OUTPUT/checkpoint-<step> of xrank train) as a Hugging Face model directory.",
    "Every file of the checkpoint is checked against its manifest (size, crc32) first. OUT gets config.json,\n"
    "model.safetensors and the tokenizer files; the optimizer shards and the manifest stay behind. The config\n"
    "names the activation sentence-transformers' CrossEncoder applies, so CrossEncoder(OUT).predict gives what\n"
    "xrank score gives. A checkpoint directory can also be given directly to xrank score, eval and inspect.",
    "  xrank export run1/checkpoint-2000 my-reranker\n"
    "  xrank export \"run1/$(cat run1/latest)\" my-reranker --overwrite",
};

const CliCmd CLI_CMD_EXPORT = {"export", EXPORT_FLAGS, NFLAGS, &EXPORT_HELP, 2, NULL, 0, NULL};

int cmd_export(int argc, char **argv) {
    CliBase b;
    int pr = cli_start(&b, &CLI_CMD_EXPORT, 1, argc, argv);
    if (pr >= 0) return pr;
    XrErr e = {{0}};
    const Args *ap = &b.args;
    if (ap->npositional != 2) {
        xr_errf(&e, "give CKPT and OUT (xrank export --help)");
        return cli_fail_base(&b, &e, 2);
    }
    const Args a = *ap;
    const char *ck = a.positional[0], *out = a.positional[1];
    CkptManifest m;
    int rc = ckpt_open(ck, &m, 1, &e);
    struct stat sb;
    char *tmp = NULL;
    if (rc == 0) { /* what killed runs left, before the check: an earlier export put back from OUT.old.* exists */
        char note[4096];
        xr_tmpclean_sweep(out, note, sizeof note);
        if (note[0]) fprintf(stderr, "xrank export: %s\n", note);
    }
    if (rc == 0 && stat(out, &sb) == 0) {
        char *cj = xr_path_join(out, "config.json");
        int model_dir = S_ISDIR(sb.st_mode) && xr_file_exists(cj) && !ckpt_is_checkpoint(out);
        free(cj);
        if (!model_dir || !b.overwrite)
            rc = xr_errf(&e, "%s exists%s", out, model_dir ? " (use --overwrite to replace it)" : " and is not a model directory");
    }
    if (rc == 0) {
        tmp = xr_tmpclean_name(out);
        xr_tmpclean_add(tmp); /* before it exists: SIGINT / SIGTERM / SIGHUP from here on remove it */
        xr_remove_flat_dir(tmp);
        if (mkdir(tmp, 0755)) rc = xr_errf(&e, "cannot create %s: %s", tmp, strerror(errno));
    }
    int have_model = 0, have_config = 0;
    for (int i = 0; rc == 0 && i < m.nfiles; i++) {
        const char *f = m.files[i].name;
        if (!strncmp(f, "optimizer-", 10)) continue;
        char *src = xr_path_join(ck, f), *dst = xr_path_join(tmp, f);
        if (!strcmp(f, "config.json")) rc = hf_write_st_activation(src, dst, !strcmp(args_str(&a, "activation"), "sigmoid"), &e), have_config = 1;
        else rc = xr_copy_file(src, dst, 1, &e);
        have_model |= !strcmp(f, CKPT_MODEL);
        free(src), free(dst);
    }
    if (rc == 0 && (!have_model || !have_config)) rc = xr_errf(&e, "%s: the manifest lists no %s", ck, have_model ? "config.json" : CKPT_MODEL);
    if (rc == 0) xr_tmpclean_test_pause("export", tmp);
    if (rc == 0) rc = xr_tmpclean_commit_dir(tmp, out, &e);
    if (rc && tmp) xr_remove_flat_dir(tmp); /* nothing when it is in place already */
    if (tmp) xr_tmpclean_forget(tmp);
    if (rc == 0) fprintf(stderr, "xrank export: %s (step %lld) -> %s\n", ck, (long long)m.step, out);
    else fprintf(stderr, "xrank export: error: %s\n", e.msg);
    if (m.files) ckpt_manifest_free(&m);
    free(tmp);
    return cli_end(&b, rc ? 1 : 0);
}
