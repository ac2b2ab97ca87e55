/* test_plot.c: where `xrank plot` puts a panel's legend (plot_legend_place, launch/plot_cairo.c: pure geometry,
 * built here without cairo). On the demo's evaluation panel (its 5 evaluations, 3 reranked and 3 flat retriever
 * series) the top right corner, where the legend used to be, covers data, and the chosen box covers none; data
 * through all four corners make it raise the y range and still cover none; data low in the plot leave the top right.
 * "Covers none" is checked independently of the placement's own segment clipping: every line sampled every 0.25 px
 * and every point, against the box grown by the marker radius (3 px). */
#include <math.h>
#include <string.h>

#include "plot.h"
#include "testutil.h"

/* the panel geometry of plot_cairo.c (PW 640, PH 400, margins ML 78, MR 18, MT 34, MB 52), legend 6 rows */
#define X0 78.0
#define X1 622.0
#define Y0 34.0
#define Y1 348.0
#define LW 160.0
#define LH 102.0

typedef struct {
    double xmin, xmax, ymin, ymax;
} Range;

/* The ranges as plot_panel pads them: x by 2 %, y by 5 %. */
static Range padded(const PlotPanel *p) {
    Range r = {INFINITY, -INFINITY, INFINITY, -INFINITY};
    for (int s = 0; s < p->nseries; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            r.xmin = fmin(r.xmin, p->series[s].x[i]), r.xmax = fmax(r.xmax, p->series[s].x[i]);
            r.ymin = fmin(r.ymin, p->series[s].y[i]), r.ymax = fmax(r.ymax, p->series[s].y[i]);
        }
    double px = (r.xmax - r.xmin) * 0.02, py = (r.ymax - r.ymin) * 0.05;
    r.xmin -= px, r.xmax += px, r.ymin -= py, r.ymax += py;
    return r;
}

/* Pixels of the data (lines sampled every 0.25 px, and points) within 3 px of the w x h box at (bx, by). */
static int covered(const PlotPanel *p, Range r, double bx, double by, double w, double h) {
    int hits = 0;
    for (int s = 0; s < p->nseries; s++) {
        const PlotSeries *se = &p->series[s];
        for (int i = 0; i < se->n; i++) {
            double ax = X0 + (se->x[i] - r.xmin) / (r.xmax - r.xmin) * (X1 - X0);
            double ay = Y1 - (se->y[i] - r.ymin) / (r.ymax - r.ymin) * (Y1 - Y0);
            double cx = ax, cy = ay;
            if (i + 1 < se->n) {
                cx = X0 + (se->x[i + 1] - r.xmin) / (r.xmax - r.xmin) * (X1 - X0);
                cy = Y1 - (se->y[i + 1] - r.ymin) / (r.ymax - r.ymin) * (Y1 - Y0);
            }
            int steps = (int)(hypot(cx - ax, cy - ay) * 4) + 1;
            for (int k = 0; k <= steps; k++) {
                double x = ax + (cx - ax) * k / steps, y = ay + (cy - ay) * k / steps;
                if (x > bx - 3 && x < bx + w + 3 && y > by - 3 && y < by + h + 3) hits++;
            }
        }
    }
    return hits;
}

int main(void) {
    /* the demo's evaluation panel: the 5 dev-slice evaluations of the full demo run (RESULTS.md, the demo with its
     * learning curve: the dip at step 150), reranked and retriever (base) ndcg@10, mrr@10, map@100 */
    static const double steps[5] = {75, 150, 225, 300, 372};
    static const double ndcg[5] = {0.8006, 0.6684, 0.8842, 0.8837, 0.8872};
    static const double mrr[5] = {0.7549, 0.5801, 0.8618, 0.8605, 0.8617};
    static const double map[5] = {0.7566, 0.5821, 0.8629, 0.8616, 0.8617};
    static const double b_ndcg[5] = {0.8520, 0.8520, 0.8520, 0.8520, 0.8520};
    static const double b_mrr[5] = {0.8190, 0.8190, 0.8190, 0.8190, 0.8190};
    static const double b_map[5] = {0.8198, 0.8198, 0.8198, 0.8198, 0.8198};
    PlotSeries demo[6] = {{"ndcg@10 reranked", steps, ndcg, 5, 0, 0},  {"mrr@10 reranked", steps, mrr, 5, 0, 1},
                          {"map@100 reranked", steps, map, 5, 0, 2},   {"ndcg@10 retriever", steps, b_ndcg, 5, 1, 0},
                          {"mrr@10 retriever", steps, b_mrr, 5, 1, 1}, {"map@100 retriever", steps, b_map, 5, 1, 2}};
    PlotPanel pd = {"evaluation", "step", "metric", demo, 6, NULL};
    Range r = padded(&pd);
    /* where the legend was: top right, inside by 6 px */
    TU_CHECK(covered(&pd, r, X1 - 6 - LW, Y0 + 6, LW, LH) > 0,
             "the old top right place covers no demo data: the test is moot");
    double bx, by, ymax = r.ymax;
    int c = plot_legend_place(&pd, r.xmin, r.xmax, r.ymin, &ymax, X0, X1, Y0, Y1, LW, LH, &bx, &by);
    TU_CHECK(c == 2, "demo panel: corner %d, want 2 (bottom right: under the last evaluations)", c);
    TU_CHECK(ymax == r.ymax, "demo panel: y range raised (%g -> %g) with a free corner", r.ymax, ymax);
    TU_CHECK(covered(&pd, r, bx, by, LW, LH) == 0, "demo panel: the legend at (%g, %g) covers %d data pixels", bx, by,
             covered(&pd, r, bx, by, LW, LH));
    printf("demo evaluation panel: legend in corner %d at (%.0f, %.0f), covers 0 data pixels (the old place: %d)\n", c,
           bx, by, covered(&pd, r, X1 - 6 - LW, Y0 + 6, LW, LH));

    /* data through every corner: a cross of two diagonals and the four edges' midpoints */
    static const double zx[5] = {0, 1, 2, 3, 4}, up[5] = {0, 1, 2, 3, 4}, down[5] = {4, 3, 2, 1, 0};
    PlotSeries cross[2] = {{"up", zx, up, 5, 0, 0}, {"down", zx, down, 5, 0, 1}};
    PlotPanel px = {"cross", "x", "y", cross, 2, NULL};
    r = padded(&px);
    ymax = r.ymax;
    c = plot_legend_place(&px, r.xmin, r.xmax, r.ymin, &ymax, X0, X1, Y0, Y1, LW, LH, &bx, &by);
    TU_CHECK(c == 4, "cross: corner %d, want 4 (no corner free: y range raised)", c);
    TU_CHECK(ymax > r.ymax, "cross: y range not raised (%g)", ymax);
    Range raised = r;
    raised.ymax = ymax;
    TU_CHECK(covered(&px, raised, bx, by, LW, LH) == 0,
             "cross: after raising ymax to %g the legend covers %d data pixels", ymax,
             covered(&px, raised, bx, by, LW, LH));
    printf("cross through all corners: ymax %.3f -> %.3f, legend top right covers 0 data pixels\n", r.ymax, ymax);

    /* a line falling from the top left: the first choice, top right, is free */
    static const double low[5] = {0.12, 0.05, 0.02, 0.01, 0}, hi1[2] = {0, 4}, top1[2] = {1, 1};
    PlotSeries lowser[2] = {{"low", zx, low, 5, 0, 0}, {NULL, hi1, top1, 2, 1, 1}};
    PlotPanel pl = {"low", "x", "y", lowser, 1, NULL};
    r = padded(&pl);
    ymax = r.ymax;
    c = plot_legend_place(&pl, r.xmin, r.xmax, r.ymin, &ymax, X0, X1, Y0, Y1, LW, 20, &bx, &by);
    TU_CHECK(c == 0 && by == Y0 + 6 && bx == X1 - 6 - LW, "low data: corner %d at (%g, %g), want top right", c, bx, by);
    /* and a flat line along the top edge pushes it down to the bottom corners */
    pl.nseries = 2;
    r = padded(&pl);
    ymax = r.ymax;
    c = plot_legend_place(&pl, r.xmin, r.xmax, r.ymin, &ymax, X0, X1, Y0, Y1, LW, 20, &bx, &by);
    TU_CHECK(c >= 2, "a line along the top: corner %d, want a bottom one or a raised range", c);
    Range r2 = r;
    r2.ymax = ymax;
    TU_CHECK(covered(&pl, r2, bx, by, LW, 20) == 0, "a line along the top: corner %d covers data", c);
    return tu_finish("test_plot");
}
