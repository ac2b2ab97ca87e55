/* cmd_plot.c: `xrank plot RUN_DIR`: the training loss, learning rate, evaluation metrics and throughput over the
 * steps of a run, read from RUN_DIR/metrics.jsonl (docs/FORMATS.md), drawn as PNG and SVG (launch/plot.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cli_common.h"
#include "plot.h"

static const ArgSpec PLOT_FLAGS[] = {
    CLI_FLAG_OUTPUT(NULL, "FILE",
                    "the picture: FILE.png and FILE.svg are both written (FILE may end in .png or .svg; default: "
                    "RUN_DIR/metrics.png and RUN_DIR/metrics.svg)"),
    CLI_FLAG_OVERWRITE("replace existing pictures"),
};
#define NFLAGS ((int)(sizeof PLOT_FLAGS / sizeof PLOT_FLAGS[0]))

static const ArgHelp PLOT_HELP = {
    "Plot a training run: loss, learning rate, evaluation metrics and throughput over the steps.",
    "RUN_DIR is the --output of xrank train (or its metrics.jsonl). Four panels: the training loss, the learning\n"
    "rate, the reranked evaluation metrics (NDCG@10, MRR@10, MAP@100 when logged; solid) with the retriever's\n"
    "(dashed) when the run evaluated\n"
    "(--eval-data), and the pairs per second. Written as PNG and SVG with cairo.",
    "  xrank plot demo_out/run\n  xrank plot run --output report/run.png --overwrite",
};

const CliCmd CLI_CMD_PLOT = {"plot", PLOT_FLAGS, NFLAGS, &PLOT_HELP, 1, NULL, 0, NULL};

typedef struct {
    double *v;
    int n, cap;
} Vec;

static void vec_push(Vec *a, double x) {
    if (a->n == a->cap) a->v = xr_realloc(a->v, sizeof(double) * (size_t)(a->cap = a->cap ? a->cap * 2 : 64));
    a->v[a->n++] = x;
}

#define PLOT_MAX_METRICS 3
typedef struct {
    Vec step, loss, lr, pps;                                /* train lines */
    Vec estep, rer[PLOT_MAX_METRICS], base[PLOT_MAX_METRICS]; /* eval lines */
    char *metric[PLOT_MAX_METRICS];
    int nmetrics;
} Run;

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* One metrics.jsonl line. Lines of other types are skipped; a line that is not a JSON object is an error. */
static int plot_line(Run *r, const char *path, long ln, const char *text, XrErr *e) {
    cJSON *o = cJSON_Parse(text);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return xr_errf(e, "%s:%ld: not a JSON object (a metrics.jsonl line written by xrank train?)", path, ln);
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    double step = num(o, "step");
    if ((!strcmp(t, "train") || !strcmp(t, "eval")) && !(step >= 0)) {
        cJSON_Delete(o);
        return xr_errf(e, "%s:%ld: a \"%s\" line without a step", path, ln, t);
    }
    if (!strcmp(t, "train")) {
        vec_push(&r->step, step), vec_push(&r->loss, num(o, "loss"));
        vec_push(&r->lr, num(o, "learning_rate")), vec_push(&r->pps, num(o, "pairs_per_s"));
    } else if (!strcmp(t, "eval")) {
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "eval");
        const cJSON *rer = cJSON_GetObjectItemCaseSensitive(ev, "reranked");
        const cJSON *base = cJSON_GetObjectItemCaseSensitive(ev, "base");
        if (!cJSON_IsObject(rer)) {
            cJSON_Delete(o);
            return xr_errf(e, "%s:%ld: an eval line without eval.reranked", path, ln);
        }
        if (!r->nmetrics) { /* the headline metrics when the run has them (a readable legend), else the first 3 */
            static const char *const pref[] = {"ndcg@10", "mrr@10", "map@100"};
            for (int k = 0; k < 3; k++)
                if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(rer, pref[k])))
                    r->metric[r->nmetrics++] = xr_strdup(pref[k]);
            const cJSON *it;
            if (!r->nmetrics)
                cJSON_ArrayForEach(it, rer) if (cJSON_IsNumber(it) && r->nmetrics < 3)
                    r->metric[r->nmetrics++] = xr_strdup(it->string);
        }
        vec_push(&r->estep, step);
        for (int m = 0; m < r->nmetrics; m++) {
            vec_push(&r->rer[m], num(rer, r->metric[m]));
            vec_push(&r->base[m], cJSON_IsObject(base) ? num(base, r->metric[m]) : NAN);
        }
    }
    cJSON_Delete(o);
    return 0;
}

static int plot_read(Run *r, const char *path, XrErr *e) {
    FILE *f = fopen(path, "r");
    if (!f) return xr_errf(e, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long ln = 0;
    int st = 0;
    while (st == 0 && getline(&line, &cap, f) >= 0) {
        ln++;
        if (line[strspn(line, " \t\r\n")]) st = plot_line(r, path, ln, line, e);
    }
    free(line);
    fclose(f);
    if (st == 0 && r->step.n == 0) st = xr_errf(e, "%s: no \"train\" lines to plot", path);
    return st;
}

static void run_free(Run *r) {
    free(r->step.v), free(r->loss.v), free(r->lr.v), free(r->pps.v), free(r->estep.v);
    for (int m = 0; m < r->nmetrics; m++) free(r->rer[m].v), free(r->base[m].v), free(r->metric[m]);
}

/* "x.png" / "x.svg" / "x" -> "x" */
static char *plot_stem(const char *out) {
    size_t n = strlen(out);
    if (n > 4 && (!strcmp(out + n - 4, ".png") || !strcmp(out + n - 4, ".svg"))) n -= 4;
    char *s = xr_malloc(n + 1);
    memcpy(s, out, n);
    s[n] = 0;
    return s;
}

int cmd_plot(int argc, char **argv) {
    CliBase b;
    int pr = cli_start(&b, &CLI_CMD_PLOT, 1, argc, argv);
    if (pr >= 0) return pr;
    XrErr e = {{0}};
    if (b.args.npositional != 1) {
        xr_errf(&e, "give the run directory: xrank plot RUN_DIR [--output FILE]");
        return cli_fail_base(&b, &e, 2);
    }
    if (!plot_available()) {
        plot_write("the plot", "", NULL, 0, 1, &e);
        return cli_fail_base(&b, &e, 2);
    }
    const char *in = b.args.positional[0];
    size_t il = strlen(in);
    int is_file = il > 6 && !strcmp(in + il - 6, ".jsonl");
    char *mj = is_file ? xr_strdup(in) : xr_path_join(in, "metrics.jsonl");
    char *dir = is_file ? NULL : xr_strdup(in);
    if (is_file) {
        const char *sl = strrchr(in, '/');
        dir = sl ? xr_strdup(in) : xr_strdup(".");
        if (sl) dir[sl - in] = 0;
    }
    char *stem = b.output ? plot_stem(b.output) : xr_path_join(dir, "metrics");
    size_t sl = strlen(stem) + 5;
    char *png = xr_malloc(sl), *svg = xr_malloc(sl);
    snprintf(png, sl, "%s.png", stem), snprintf(svg, sl, "%s.svg", stem);
    Run r;
    memset(&r, 0, sizeof r);
    int st = plot_read(&r, mj, &e);
    if (st == 0) st = cli_check_output(png, b.overwrite, 0, &e);
    if (st == 0) st = cli_check_output(svg, b.overwrite, 0, &e);
    if (st == 0) {
        PlotSeries loss = {NULL, r.step.v, r.loss.v, r.step.n, 0, 0}, lr = {NULL, r.step.v, r.lr.v, r.step.n, 0, 0},
                   pps = {NULL, r.step.v, r.pps.v, r.step.n, 0, 0};
        PlotSeries ev[2 * PLOT_MAX_METRICS];
        char labels[2 * PLOT_MAX_METRICS][64];
        int ne = 0;
        for (int m = 0; m < r.nmetrics; m++) {
            snprintf(labels[ne], sizeof labels[ne], "%s reranked", r.metric[m]);
            ev[ne] = (PlotSeries){labels[ne], r.estep.v, r.rer[m].v, r.estep.n, 0, m}, ne++;
        }
        for (int m = 0; m < r.nmetrics; m++) {
            snprintf(labels[ne], sizeof labels[ne], "%s retriever", r.metric[m]);
            ev[ne] = (PlotSeries){labels[ne], r.estep.v, r.base[m].v, r.estep.n, 1, m}, ne++;
        }
        PlotPanel panels[4] = {
            {"training loss", "step", "loss (mean since the previous line)", &loss, 1, NULL},
            {"learning rate", "step", "learning rate", &lr, 1, NULL},
            {"evaluation (held-out queries)", "step", "metric", ev, ne,
             "no evaluation in this run (train with --eval-data)"},
            {"throughput", "step", "pairs / s (all ranks)", &pps, 1, NULL},
        };
        char title[512];
        snprintf(title, sizeof title, "xrank train: %s (%d log lines, %d evaluations)", mj, r.step.n, r.estep.n);
        st = plot_write(png, title, panels, 4, 2, &e);
        if (st == 0) st = plot_write(svg, title, panels, 4, 2, &e);
    }
    if (st == 0) printf("wrote %s and %s\n", png, svg);
    run_free(&r);
    free(mj), free(dir), free(stem), free(png), free(svg);
    if (st) return cli_fail_base(&b, &e, 1);
    return cli_end(&b, 0);
}
