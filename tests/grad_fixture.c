/* grad_fixture.c: loading the gradient fixtures and checking gradients against them (grad_fixture.h). */
#include "grad_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"


const char *fpath(const Fix *f, const char *file) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s/%s", f->dir, file);
    return b;
}

double jnum(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) {
        fprintf(stderr, "case.json: no number %s\n", key);
        exit(1);
    }
    return v->valuedouble;
}

const char *jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v)) {
        fprintf(stderr, "case.json: no string %s\n", key);
        exit(1);
    }
    return v->valuestring;
}

void fix_load(Fix *f, const char *name) {
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s/%s", tu_path("fixtures/grad"), name);
    XrErr e;
    char *text = xr_read_file(fpath(f, "case.json"), NULL, &e);
    if (!text) {
        fprintf(stderr, "fixture missing: %s\n", e.msg);
        exit(1);
    }
    f->info = cJSON_Parse(text);
    free(text);
    if (!f->info) {
        fprintf(stderr, "%s: bad JSON\n", fpath(f, "case.json"));
        exit(1);
    }
    f->B = (int)jnum(f->info, "B"), f->T = (int)jnum(f->info, "T"), f->G = (int)jnum(f->info, "group");
    size_t n;
    f->ids = tu_read_i32(fpath(f, "ids.i32"), &n);
    f->types = tu_read_i32(fpath(f, "types.i32"), &n);
    f->mask = tu_read_i32(fpath(f, "mask.i32"), &n);
    f->labels = tu_read_f32(fpath(f, "labels.f32"), &n);
    f->logits = tu_read_f32(fpath(f, "logits.f32"), &n);
    f->dl_bce = tu_read_f32(fpath(f, "dlogits_bce.f32"), &n);
    f->dl_ce = tu_read_f32(fpath(f, "dlogits_ce.f32"), &n);
}

void fix_free(Fix *f) {
    cJSON_Delete(f->info);
    free(f->ids), free(f->types), free(f->mask), free(f->labels), free(f->logits), free(f->dl_bce), free(f->dl_ce);
}

const EncoderTensor *find_view(Encoder *m, const char *name) {
    for (int i = 0; i < encoder_num_tensors(m); i++)
        if (strcmp(encoder_tensor(m, i)->name, name) == 0) return encoder_tensor(m, i);
    return NULL;
}

/* Tensor families for the report. */
static const char *family(const char *name) {
    if (strstr(name, "LayerNorm")) return "LayerNorm";
    if (strstr(name, "embeddings")) return "embeddings";
    if (strstr(name, "attention.self")) return "attention qkv";
    if (strstr(name, "attention.output")) return "attention out";
    if (strstr(name, "intermediate") || strstr(name, "output.dense")) return "ffn";
    return "pooler/head";
}

typedef struct {
    const char *fam;
    double rel, abs;
} FamStat;

static void fam_add(FamStat *fs, int *nf, const char *fam, double rel, double ab) {
    for (int i = 0; i < *nf; i++)
        if (strcmp(fs[i].fam, fam) == 0) {
            fs[i].rel = fmax(fs[i].rel, rel), fs[i].abs = fmax(fs[i].abs, ab);
            return;
        }
    fs[*nf].fam = fam, fs[*nf].rel = rel, fs[*nf].abs = ab;
    (*nf)++;
}

/* Every manifest tensor's gradient against the fixture: max |diff| / max |want| per tensor <= GRAD_TOL.
 * Some gradients are 0 in exact arithmetic, and both sides hold rounding noise there: the key biases (adding
 * a constant to every score of a softmax row changes nothing) and, under the group loss, the out_proj bias
 * (each group's dlogits sum to 0). A tensor whose fixture gradient is below ZERO_REL of the model's largest
 * is held to that: both sides must be below ZERO_REL. Returns a flag per encoder tensor (zero[i] = 1). */
void check_grads(Encoder *m, const float *g, const Fix *f, const char *label, int *zero) {
    size_t n;
    float *want = tu_read_f32(fpath(f, "grads.f32"), &n);
    int32_t *rows = tu_read_i32(fpath(f, "word_rows.i32"), &n);
    size_t nrows = n;
    float *wrows = tu_read_f32(fpath(f, "word_grad.f32"), &n);
    const char *word = jstr(f->info, "word");
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(f->info, "tensors");
    FamStat fs[8];
    int nf = 0, ntensors = 0, nzero = 0;
    size_t pos = 0;
    const cJSON *it;
    double gmax = 0, zgot = 0, zwant = 0;
    for (size_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(wrows[i]));
    cJSON_ArrayForEach(it, tensors) {
        size_t numel = (size_t)cJSON_GetArrayItem(it, 1)->valuedouble;
        if (strcmp(cJSON_GetArrayItem(it, 0)->valuestring, word) == 0) continue;
        for (size_t i = 0; i < numel; i++) gmax = fmax(gmax, fabs(want[pos + i]));
        pos += numel;
    }
    pos = 0;
    for (int i = 0; i < encoder_num_tensors(m); i++) zero[i] = 0;
    cJSON_ArrayForEach(it, tensors) {
        const char *name = cJSON_GetArrayItem(it, 0)->valuestring;
        size_t numel = (size_t)cJSON_GetArrayItem(it, 1)->valuedouble;
        const EncoderTensor *t = find_view(m, name);
        TU_CHECK(t != NULL, "%s: tensor %s of the fixture is not in the encoder", label, name);
        ntensors++;
        if (!t) continue;
        TU_CHECK(t->numel == numel, "%s: %s has %zu elements, fixture %zu", label, name, t->numel, numel);
        const float *got = g + t->offset;
        double dmax = 0, wmax = 0, gotmax = 0;
        if (strcmp(name, word) == 0) {
            /* listed rows as the fixture has them, every other row exactly 0 */
            size_t H = (size_t)t->shape[1], r = 0, nonzero = 0;
            for (size_t row = 0; row < (size_t)t->shape[0]; row++) {
                if (r < nrows && (size_t)rows[r] == row) {
                    for (size_t j = 0; j < H; j++) {
                        dmax = fmax(dmax, fabs(got[row * H + j] - wrows[r * H + j]));
                        wmax = fmax(wmax, fabs(wrows[r * H + j]));
                    }
                    r++;
                } else {
                    for (size_t j = 0; j < H; j++) nonzero += got[row * H + j] != 0.0f;
                }
            }
            TU_CHECK(nonzero == 0, "%s: %zu word-embedding gradients outside the batch's ids are non-zero", label,
                     nonzero);
        } else {
            for (size_t i = 0; i < numel; i++) {
                dmax = fmax(dmax, fabs(got[i] - want[pos + i]));
                wmax = fmax(wmax, fabs(want[pos + i]));
                gotmax = fmax(gotmax, fabs(got[i]));
            }
            pos += numel;
        }
        if (wmax < ZERO_REL * gmax) {
            zero[t - encoder_tensor(m, 0)] = 1;
            nzero++;
            zgot = fmax(zgot, gotmax), zwant = fmax(zwant, wmax);
            TU_CHECK(gotmax < ZERO_REL * gmax, "%s: %s: torch's gradient is 0 up to rounding (%.3g), ours %.3g", label,
                     name, wmax, gotmax);
            continue;
        }
        double rel = dmax / (wmax > 0 ? wmax : 1);
        TU_CHECK(rel <= GRAD_TOL, "%s: gradient of %s differs by %.3g (max |grad| %.3g, relative %.3g)", label, name,
                 dmax, wmax, rel);
        fam_add(fs, &nf, family(name), rel, dmax);
    }
    TU_CHECK(ntensors == encoder_num_tensors(m), "%s: fixture has %d tensors, encoder %d", label, ntensors,
             encoder_num_tensors(m));
    printf("%-15s gradients of %d tensors, max relative (abs) diff per family:\n", label, ntensors);
    for (int i = 0; i < nf; i++) printf("    %-14s %.2e (%.2e)\n", fs[i].fam, fs[i].rel, fs[i].abs);
    printf("    %d tensors with a gradient that is 0 in exact arithmetic: max |grad| torch %.1e, ours %.1e (largest "
           "gradient %.2g)\n", nzero, zwant, zgot, gmax);
    free(want), free(rows), free(wrows);
}

