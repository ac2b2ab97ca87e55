/* plot_cairo.c: the charts of plot.h drawn with cairo (PNG through an image surface, SVG through cairo's SVG
 * surface; the same drawing code for both). Without cairo (XRANK_HAVE_CAIRO undefined) plot_write refuses. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define LEGEND_INSET 6.0 /* px between the legend and the frame */
#define MARK_R 4.0       /* px around a data point that the legend keeps clear of (marker radius 3, line 1.8) */

/* 1 when the segment (ax, ay)-(bx, by), or the point when both ends are equal, meets the box [l, r] x [t, b]
 * (Liang-Barsky clipping: the part of the segment inside each slab, intersected). */
static int plot_seg_hits(double ax, double ay, double bx, double by, double l, double t, double r, double b) {
    double dx = bx - ax, dy = by - ay, lo = 0, hi = 1;
    double pq[4][2] = {{-dx, ax - l}, {dx, r - ax}, {-dy, ay - t}, {dy, b - ay}};
    for (int k = 0; k < 4; k++) {
        double pk = pq[k][0], qk = pq[k][1];
        if (pk == 0) {
            if (qk < 0) return 0; /* parallel to this edge and outside it */
            continue;
        }
        double u = qk / pk;
        if (pk < 0) lo = u > lo ? u : lo;
        else hi = u < hi ? u : hi;
        if (lo > hi) return 0;
    }
    return 1;
}

/* 1 when no line or marker of p's series, mapped to pixels, comes into the box (l, t, r, b) grown by MARK_R. */
static int plot_box_free(const PlotPanel *p, double xmin, double xmax, double ymin, double ymax, double x0, double x1,
                         double y0, double y1, double l, double t, double r, double b) {
    l -= MARK_R, t -= MARK_R, r += MARK_R, b += MARK_R;
    for (int s = 0; s < p->nseries; s++) {
        const PlotSeries *se = &p->series[s];
        double px = 0, py = 0;
        int pen = 0;
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) {
                pen = 0;
                continue;
            }
            double x = x0 + (se->x[i] - xmin) / (xmax - xmin) * (x1 - x0);
            double y = y1 - (se->y[i] - ymin) / (ymax - ymin) * (y1 - y0);
            if (plot_seg_hits(pen ? px : x, pen ? py : y, x, y, l, t, r, b)) return 0;
            px = x, py = y, pen = 1;
        }
    }
    return 1;
}

int plot_legend_place(const PlotPanel *p, double xmin, double xmax, double ymin, double *ymax, double x0, double x1,
                      double y0, double y1, double w, double h, double *bx, double *by) {
    double left = x0 + LEGEND_INSET, right = x1 - LEGEND_INSET - w, top = y0 + LEGEND_INSET,
           bottom = y1 - LEGEND_INSET - h;
    const double cx[4] = {right, left, right, left}, cy[4] = {top, top, bottom, bottom};
    for (int c = 0; c < 4; c++)
        if (plot_box_free(p, xmin, xmax, ymin, *ymax, x0, x1, y0, y1, cx[c], cy[c], cx[c] + w, cy[c] + h)) {
            *bx = cx[c], *by = cy[c];
            return c;
        }
    /* every corner is crossed: raise ymax until the data stay below a band that holds the legend (all points,
     * hence all lines between them, under it), unless the legend would take most of the plot's height */
    double band = h + 2 * LEGEND_INSET + MARK_R, H = y1 - y0;
    if (band < 0.6 * H) *ymax = ymin + (*ymax - ymin) * H / (H - band);
    *bx = right, *by = top;
    return 4;
}

#ifdef XRANK_HAVE_CAIRO
#include <cairo-svg.h>
#include <cairo.h>

int plot_available(void) { return 1; }

#define PW 640.0 /* one panel */
#define PH 400.0
#define TITLE_H 44.0
#define ML 78.0 /* panel margins: left (tick labels), right, top (title), bottom (ticks + x label) */
#define MR 18.0
#define MT 34.0
#define MB 52.0

static const double COLORS[][3] = {{0.12, 0.47, 0.71}, {0.84, 0.15, 0.16}, {0.17, 0.63, 0.17}, {1.0, 0.5, 0.05},
                                   {0.58, 0.40, 0.74}, {0.55, 0.34, 0.29}, {0.89, 0.47, 0.76}, {0.5, 0.5, 0.5}};
#define NCOLORS ((int)(sizeof COLORS / sizeof COLORS[0]))

/* A round tick spacing (1, 2 or 5 x 10^k) giving about `want` intervals over span. */
static double plot_tick_step(double span, int want) {
    double raw = span / want, p = pow(10.0, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void plot_text(cairo_t *cr, double x, double y, const char *s, double size, double ax, double ay, int bold) {
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
    cairo_text_extents_t te;
    cairo_text_extents(cr, s, &te);
    cairo_move_to(cr, x - ax * te.width - te.x_bearing, y - ay * te.height - te.y_bearing);
    cairo_show_text(cr, s);
}

static void plot_fmt(char *buf, size_t n, double v, double step) {
    if (fabs(v) < step * 1e-6) v = 0;
    if (v == 0) snprintf(buf, n, "0");
    else if (step >= 1e5 || step < 1e-3) snprintf(buf, n, "%.1e", v);
    else if (step >= 1) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%.*f", (int)ceil(-log10(step) - 1e-9), v);
}

static void plot_panel(cairo_t *cr, double ox, double oy, const PlotPanel *p) {
    double x0 = ox + ML, x1 = ox + PW - MR, y0 = oy + MT, y1 = oy + PH - MB;
    cairo_set_source_rgb(cr, 0, 0, 0);
    plot_text(cr, (x0 + x1) / 2, oy + 14, p->title, 14, 0.5, 0.5, 1);
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int points = 0;
    for (int s = 0; s < p->nseries; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!isfinite(x) || !isfinite(y)) continue;
            xmin = fmin(xmin, x), xmax = fmax(xmax, x), ymin = fmin(ymin, y), ymax = fmax(ymax, y);
            points++;
        }
    cairo_set_line_width(cr, 1);
    cairo_rectangle(cr, x0, y0, x1 - x0, y1 - y0);
    cairo_stroke(cr);
    if (!points) {
        plot_text(cr, (x0 + x1) / 2, (y0 + y1) / 2, p->empty_note ? p->empty_note : "no data", 12, 0.5, 0.5, 0);
        return;
    }
    if (xmax == xmin) {
        xmin -= 0.5, xmax += 0.5;
    } else { /* the first and last markers whole, not cut by the frame */
        double pad = (xmax - xmin) * 0.02;
        xmin -= pad, xmax += pad;
    }
    if (ymax == ymin) {
        double d = ymin != 0 ? fabs(ymin) * 0.05 : 0.5;
        ymin -= d, ymax += d;
    } else {
        double pad = (ymax - ymin) * 0.05;
        ymin -= pad, ymax += pad;
    }
    /* the legend's size, then its place: a corner the data leave free (ymax raised when none is), so it is
     * known before the ticks are */
    int nleg = 0;
    double legw = 0;
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 11);
    for (int s = 0; s < p->nseries; s++) {
        if (!p->series[s].label) continue;
        cairo_text_extents_t te;
        cairo_text_extents(cr, p->series[s].label, &te);
        legw = fmax(legw, te.x_advance);
        nleg++;
    }
    double legx = 0, legy = 0, legh = 16.0 * nleg + 6;
    legw += 30 + 8 + 6; /* line sample, gap, padding both sides */
    if (nleg) plot_legend_place(p, xmin, xmax, ymin, &ymax, x0, x1, y0, y1, legw, legh, &legx, &legy);
    double xs = plot_tick_step(xmax - xmin, 6), ys = plot_tick_step(ymax - ymin, 5);
#define PX(v) (x0 + ((v) - xmin) / (xmax - xmin) * (x1 - x0))
#define PY(v) (y1 - ((v) - ymin) / (ymax - ymin) * (y1 - y0))
    char buf[48];
    for (double t = ceil(xmin / xs) * xs; t <= xmax + xs * 1e-9; t += xs) {
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, PX(t), y0), cairo_line_to(cr, PX(t), y1), cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_move_to(cr, PX(t), y1), cairo_line_to(cr, PX(t), y1 + 4), cairo_stroke(cr);
        plot_fmt(buf, sizeof buf, t, xs);
        plot_text(cr, PX(t), y1 + 14, buf, 11, 0.5, 0.5, 0);
    }
    for (double t = ceil(ymin / ys) * ys; t <= ymax + ys * 1e-9; t += ys) {
        cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
        cairo_move_to(cr, x0, PY(t)), cairo_line_to(cr, x1, PY(t)), cairo_stroke(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_move_to(cr, x0 - 4, PY(t)), cairo_line_to(cr, x0, PY(t)), cairo_stroke(cr);
        plot_fmt(buf, sizeof buf, t, ys);
        plot_text(cr, x0 - 7, PY(t), buf, 11, 1, 0.5, 0);
    }
    if (p->xlabel) plot_text(cr, (x0 + x1) / 2, y1 + 36, p->xlabel, 12, 0.5, 0.5, 0);
    if (p->ylabel) {
        cairo_save(cr);
        cairo_translate(cr, ox + 16, (y0 + y1) / 2);
        cairo_rotate(cr, -M_PI / 2);
        plot_text(cr, 0, 0, p->ylabel, 12, 0.5, 0.5, 0);
        cairo_restore(cr);
    }
    cairo_save(cr);
    cairo_rectangle(cr, x0, y0, x1 - x0, y1 - y0);
    cairo_clip(cr);
    for (int s = 0; s < p->nseries; s++) {
        const PlotSeries *se = &p->series[s];
        const double *c = COLORS[se->color % NCOLORS];
        cairo_set_source_rgb(cr, c[0], c[1], c[2]);
        cairo_set_line_width(cr, 1.8);
        double dash[] = {6, 4};
        cairo_set_dash(cr, dash, se->dashed ? 2 : 0, 0);
        int pen = 0;
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !isfinite(se->y[i])) {
                pen = 0;
                continue;
            }
            if (pen) cairo_line_to(cr, PX(se->x[i]), PY(se->y[i]));
            else cairo_move_to(cr, PX(se->x[i]), PY(se->y[i]));
            pen = 1;
        }
        cairo_stroke(cr);
        if (se->n == 1 || se->n < 40) /* few points (evaluations): mark each */
            for (int i = 0; i < se->n; i++) {
                if (!isfinite(se->x[i]) || !isfinite(se->y[i])) continue;
                cairo_arc(cr, PX(se->x[i]), PY(se->y[i]), 3, 0, 2 * M_PI);
                cairo_fill(cr);
            }
        cairo_set_dash(cr, dash, 0, 0);
    }
    cairo_restore(cr);
    /* legend, where plot_legend_place found room: one box, a line sample and the label per series */
    if (nleg) {
        cairo_set_source_rgba(cr, 1, 1, 1, 0.9);
        cairo_rectangle(cr, legx, legy, legw, legh);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 0.75, 0.75, 0.75);
        cairo_set_line_width(cr, 0.8);
        cairo_stroke(cr);
    }
    int row = 0;
    for (int s = 0; s < p->nseries; s++) {
        if (!p->series[s].label) continue;
        const double *c = COLORS[p->series[s].color % NCOLORS];
        double ly = legy + 11 + 16 * row++, lx = legx + 6;
        cairo_set_source_rgb(cr, c[0], c[1], c[2]);
        double dash[] = {6, 4};
        cairo_set_dash(cr, dash, p->series[s].dashed ? 2 : 0, 0);
        cairo_set_line_width(cr, 2);
        cairo_move_to(cr, lx, ly), cairo_line_to(cr, lx + 24, ly), cairo_stroke(cr);
        cairo_set_dash(cr, dash, 0, 0);
        cairo_set_source_rgb(cr, 0, 0, 0);
        plot_text(cr, lx + 30, ly, p->series[s].label, 11, 0, 0.5, 0);
    }
#undef PX
#undef PY
}

int plot_write(const char *path, const char *title, const PlotPanel *panels, int npanels, int cols, XrErr *e) {
    int rows = (npanels + cols - 1) / cols;
    double W = PW * cols, H = TITLE_H + PH * rows;
    size_t n = strlen(path);
    int svg = n > 4 && !strcmp(path + n - 4, ".svg"), png = n > 4 && !strcmp(path + n - 4, ".png");
    if (!svg && !png) return xr_errf(e, "%s: the plot's file name must end in .png or .svg", path);
    cairo_surface_t *sf = svg ? cairo_svg_surface_create(path, W, H)
                              : cairo_image_surface_create(CAIRO_FORMAT_ARGB32, (int)W, (int)H);
    if (cairo_surface_status(sf) != CAIRO_STATUS_SUCCESS) {
        xr_errf(e, "%s: cairo: %s", path, cairo_status_to_string(cairo_surface_status(sf)));
        cairo_surface_destroy(sf);
        return -1;
    }
    cairo_t *cr = cairo_create(sf);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_set_source_rgb(cr, 0, 0, 0);
    plot_text(cr, W / 2, TITLE_H / 2, title, 16, 0.5, 0.5, 1);
    for (int i = 0; i < npanels; i++) plot_panel(cr, PW * (i % cols), TITLE_H + PH * (i / cols), &panels[i]);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    if (st == CAIRO_STATUS_SUCCESS && png) st = cairo_surface_write_to_png(sf, path);
    cairo_surface_finish(sf);
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(sf);
    cairo_surface_destroy(sf);
    if (st != CAIRO_STATUS_SUCCESS) return xr_errf(e, "%s: cairo: %s", path, cairo_status_to_string(st));
    return 0;
}

#else

int plot_available(void) { return 0; }

int plot_write(const char *path, const char *title, const PlotPanel *panels, int npanels, int cols, XrErr *e) {
    (void)title, (void)panels, (void)npanels, (void)cols;
    return xr_errf(e, "cannot write %s: this xrank was built without cairo; install it (apt-get install "
                      "libcairo2-dev) and rebuild", path);
}

#endif
