/* cmd_plot.c: `xrank plot RUN_DIR`: the training loss, learning rate, evaluation metrics and throughput over the
 * steps of a run, read from RUN_DIR/metrics.jsonl (docs/FORMATS.md), drawn as PNG and SVG (launch/plot.h); or
 * `xrank plot TABLE.jsonl` of benchmarks/bench_scaling.sh: throughput, efficiency and step time against ranks. */
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
    "Plot a training run (loss, learning rate, evaluation metrics, throughput over the steps) or a scaling table.",
    "RUN_DIR is the --output of xrank train (or its metrics.jsonl). Four panels: the training loss, the learning\n"
    "rate, the reranked evaluation metrics (NDCG@10, MRR@10, MAP@100 when logged; solid) with the retriever's\n"
    "(dashed) when the run evaluated\n"
    "(--eval-data), and the pairs per second. Written as PNG and SVG with cairo.\n"
    "A .jsonl file of benchmarks/bench_scaling.sh (lines with \"bench\": \"scaling\") gives the scaling picture\n"
    "instead: pairs/s against ranks for strong and weak scaling with the ideal line (dashed), the efficiency, and\n"
    "the step time split into compute, exposed communication and data (means over the rounds).",
    "  xrank plot demo_out/run\n  xrank plot run --output report/run.png --overwrite\n"
    "  xrank plot benchmarks/results/scaling_cpu_2026-12-03.jsonl --output scaling.png",
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
static int plot_line(void *ctx, const char *path, long ln, const char *text, XrErr *e) {
    Run *r = ctx;
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

/* Each non-blank line of a .jsonl file to fn(ctx, path, line number, text, e), stopping at the first failure. */
static int plot_lines(const char *path, int (*fn)(void *, const char *, long, const char *, XrErr *), void *ctx,
                      XrErr *e) {
    FILE *f = fopen(path, "r");
    if (!f) return xr_errf(e, "cannot read %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    long ln = 0;
    int st = 0;
    while (st == 0 && getline(&line, &cap, f) >= 0) {
        ln++;
        if (line[strspn(line, " \t\r\n")]) st = fn(ctx, path, ln, line, e);
    }
    free(line);
    fclose(f);
    return st;
}

static int plot_read(Run *r, const char *path, XrErr *e) {
    int st = plot_lines(path, plot_line, r, e);
    if (st == 0 && r->step.n == 0) st = xr_errf(e, "%s: no \"train\" lines to plot", path);
    return st;
}

/* A scaling table (benchmarks/bench_scaling.sh): one line per run; the points are the means over the rounds of
 * each (mode, ranks). */
#define SCAL_MAX 64
typedef struct {
    int nmode[2]; /* points per mode: 0 strong, 1 weak */
    double ranks[2][SCAL_MAX], pps[2][SCAL_MAX], compute[2][SCAL_MAX], comm[2][SCAL_MAX], data[2][SCAL_MAX];
    int rounds[2][SCAL_MAX], over[2][SCAL_MAX];
    double threads[2], batch[2]; /* the setting of each mode's first record (threads; global or per-rank batch) */
    int skipped;                 /* records of another setting, left out */
} Scaling;

/* 1 when the file's first non-blank line is a bench_scaling.sh record, 0 when not, -1 when unreadable. */
static int is_scaling_file(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *line = NULL;
    size_t cap = 0;
    int yes = 0;
    while (getline(&line, &cap, f) >= 0) {
        if (!line[strspn(line, " \t\r\n")]) continue;
        cJSON *o = cJSON_Parse(line);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "bench");
        yes = cJSON_IsString(b) && !strcmp(b->valuestring, "scaling");
        cJSON_Delete(o);
        break;
    }
    free(line);
    fclose(f);
    return yes;
}

static int scaling_line(void *ctx, const char *path, long ln, const char *text, XrErr *e) {
    Scaling *s = ctx;
    cJSON *o = cJSON_Parse(text);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "bench"), *m = cJSON_GetObjectItemCaseSensitive(o, "mode");
    int st = 0;
    if (!cJSON_IsObject(o) || !cJSON_IsString(b) || strcmp(b->valuestring, "scaling"))
        st = xr_errf(e, "%s:%ld: not a bench_scaling.sh record (\"bench\": \"scaling\")", path, ln);
    int mode = st == 0 && cJSON_IsString(m) ? (!strcmp(m->valuestring, "strong") ? 0 : !strcmp(m->valuestring, "weak") ? 1 : -1) : -1;
    double r = num(o, "ranks"), pps = num(o, "pairs_per_s");
    if (st == 0 && (mode < 0 || !(r >= 1) || !(pps >= 0)))
        st = xr_errf(e, "%s:%ld: a scaling record needs mode (strong/weak), ranks >= 1 and pairs_per_s", path, ln);
    double th = num(o, "threads"), bt = num(o, mode == 1 ? "per_rank_batch" : "global_batch");
    if (st == 0 && s->nmode[mode] == 0) s->threads[mode] = th, s->batch[mode] = bt;
    if (st == 0 && (th != s->threads[mode] || bt != s->batch[mode])) { /* one curve per setting: the first */
        s->skipped++;
        cJSON_Delete(o);
        return 0;
    }
    if (st == 0) {
        int i = 0;
        while (i < s->nmode[mode] && s->ranks[mode][i] != r) i++;
        if (i == SCAL_MAX) st = xr_errf(e, "%s:%ld: more than %d rank counts in one mode", path, ln, SCAL_MAX);
        else {
            if (i == s->nmode[mode]) {
                s->nmode[mode]++, s->ranks[mode][i] = r;
                s->pps[mode][i] = s->compute[mode][i] = s->comm[mode][i] = s->data[mode][i] = 0;
                s->rounds[mode][i] = s->over[mode][i] = 0;
            }
            double c = num(o, "compute_s"), x = num(o, "comm_exposed_s"), d = num(o, "data_s");
            s->pps[mode][i] += pps, s->rounds[mode][i]++;
            s->compute[mode][i] += isfinite(c) ? c : 0, s->comm[mode][i] += isfinite(x) ? x : 0;
            s->data[mode][i] += isfinite(d) ? d : 0;
            s->over[mode][i] |= cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "oversubscribed"));
        }
    }
    cJSON_Delete(o);
    return st;
}

static int scaling_read(Scaling *s, const char *path, XrErr *e) {
    int st = plot_lines(path, scaling_line, s, e);
    for (int m = 0; m < 2 && st == 0; m++) { /* means over the rounds, points in rank order */
        int n = s->nmode[m];
        for (int i = 0; i < n; i++) {
            double k = s->rounds[m][i];
            s->pps[m][i] /= k, s->compute[m][i] /= k, s->comm[m][i] /= k, s->data[m][i] /= k;
        }
        for (int i = 1; i < n; i++)
            for (int j = i; j > 0 && s->ranks[m][j - 1] > s->ranks[m][j]; j--) {
#define SCAL_SWAP(a) do { double t_ = a[m][j]; a[m][j] = a[m][j - 1], a[m][j - 1] = t_; } while (0)
                SCAL_SWAP(s->ranks);
                SCAL_SWAP(s->pps);
                SCAL_SWAP(s->compute);
                SCAL_SWAP(s->comm);
                SCAL_SWAP(s->data);
#undef SCAL_SWAP
                int t = s->rounds[m][j];
                s->rounds[m][j] = s->rounds[m][j - 1], s->rounds[m][j - 1] = t;
                t = s->over[m][j], s->over[m][j] = s->over[m][j - 1], s->over[m][j - 1] = t;
            }
    }
    if (st == 0 && s->nmode[0] + s->nmode[1] == 0) st = xr_errf(e, "%s: no scaling records", path);
    return st;
}

/* The scaling picture: throughput with the ideal line (linear in ranks from the smallest point; weak scaling's
 * ideal keeps the per-rank rate), efficiency, and the step time split. */
static int scaling_plot(const Scaling *s, const char *in, const char *png, const char *svg, XrErr *e) {
    static const char *const mname[2] = {"strong", "weak"};
    double ideal[2][SCAL_MAX], eff[2][SCAL_MAX];
    PlotSeries thr[4], ef[2], split[6];
    char lab[6][64];
    int nt = 0, ne = 0, ns = 0, over = 0;
    for (int m = 0; m < 2; m++) {
        int n = s->nmode[m];
        if (!n) continue;
        double per_rank = s->pps[m][0] / s->ranks[m][0];
        for (int i = 0; i < n; i++) {
            ideal[m][i] = per_rank * s->ranks[m][i];
            eff[m][i] = 100.0 * s->pps[m][i] / ideal[m][i];
            over |= s->over[m][i];
        }
        snprintf(lab[2 * m], sizeof lab[0], m ? "weak: %g pairs per rank" : "strong: %g pairs in all", s->batch[m]);
        snprintf(lab[2 * m + 1], sizeof lab[0], "%s: ideal", mname[m]);
        thr[nt++] = (PlotSeries){lab[2 * m], s->ranks[m], s->pps[m], n, 0, m};
        thr[nt++] = (PlotSeries){lab[2 * m + 1], s->ranks[m], ideal[m], n, 1, m};
        ef[ne++] = (PlotSeries){mname[m], s->ranks[m], eff[m], n, 0, m};
    }
    int m = s->nmode[0] ? 0 : 1; /* the split of strong scaling (the fixed global batch), else weak */
    static const char *const sname[3] = {"compute", "exposed communication", "data"};
    const double *sv[3] = {s->compute[m], s->comm[m], s->data[m]};
    for (int k = 0; k < 3; k++) split[ns++] = (PlotSeries){sname[k], s->ranks[m], sv[k], s->nmode[m], 0, 2 + k};
    char st_title[96];
    snprintf(st_title, sizeof st_title, "step time split (%s scaling, mean over ranks)", mname[m]);
    PlotPanel panels[3] = {
        {"throughput", "ranks", "pairs / s (all ranks)", thr, nt, NULL},
        {"efficiency", "ranks", "% of ideal", ef, ne, NULL},
        {st_title, "ranks", "seconds per step", split, ns, NULL},
    };
    char title[512];
    double th = s->nmode[0] ? s->threads[0] : s->threads[1];
    snprintf(title, sizeof title, "xrank scaling: %s, %g thread%s per rank%s", in, th, th == 1 ? "" : "s",
             over ? " (some points oversubscribed: more ranks x threads than cores)" : "");
    int st = plot_write(png, title, panels, 3, 3, e);
    if (st == 0) st = plot_write(svg, title, panels, 3, 3, e);
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
    int scaling = is_file ? is_scaling_file(mj) : 0;
    char *stem;
    if (b.output) stem = plot_stem(b.output);
    else if (scaling == 1) { /* next to the table: scaling_x.jsonl -> scaling_x.png / .svg */
        stem = xr_strdup(in);
        stem[il - 6] = 0;
    } else
        stem = xr_path_join(dir, "metrics");
    size_t sl = strlen(stem) + 5;
    char *png = xr_malloc(sl), *svg = xr_malloc(sl);
    snprintf(png, sl, "%s.png", stem), snprintf(svg, sl, "%s.svg", stem);
    Run r;
    memset(&r, 0, sizeof r);
    if (scaling == 1) {
        Scaling *sc = xr_calloc(1, sizeof *sc);
        int st = scaling_read(sc, mj, &e);
        if (st == 0) st = cli_check_output(png, b.overwrite, 0, &e);
        if (st == 0) st = cli_check_output(svg, b.overwrite, 0, &e);
        if (st == 0) st = scaling_plot(sc, mj, png, svg, &e);
        if (st == 0) printf("wrote %s and %s\n", png, svg);
        if (st == 0 && sc->skipped)
            printf("left out %d record(s) of another setting (threads or batch differ from the first of their mode)\n",
                   sc->skipped);
        free(sc), free(mj), free(dir), free(stem), free(png), free(svg);
        if (st) return cli_fail_base(&b, &e, 1);
        return cli_end(&b, 0);
    }
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
