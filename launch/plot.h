/* plot.h: line charts drawn with cairo (launch/plot_cairo.c): a grid of panels, each with its series, axes with
 * round ticks and a legend, written as PNG or SVG (by the file's extension). A build without cairo has the same
 * API and refuses with the package to install. */
#ifndef XR_PLOT_H
#define XR_PLOT_H
#include "xr_common.h"

typedef struct {
    const char *label; /* legend text; NULL: no legend entry */
    const double *x, *y;
    int n;
    int dashed;
    int color; /* palette index; series that belong together (a metric and its baseline) share one */
} PlotSeries;

typedef struct {
    const char *title, *xlabel, *ylabel;
    const PlotSeries *series;
    int nseries;
    const char *empty_note; /* drawn in the panel when it has no points */
} PlotPanel;

/* Where a panel's legend goes, so that it covers no data: a box of w x h pixels in a corner of the plot area
 * (pixels x0..x1, y0..y1, y growing down; the data's range xmin..xmax, ymin..*ymax), 6 px in from the frame, that no
 * line or marker of p's series crosses (markers: 4 px around a point), tried top right, top left, bottom right,
 * bottom left. When all four are crossed, *ymax is raised so that the data leave a free band at the top, and the
 * box goes top right there. The box's top-left corner in *bx, *by; returns the corner (0-3 in that order, 4: top
 * right after raising *ymax). Pure geometry (no cairo): tests/test_plot.c checks it. */
int plot_legend_place(const PlotPanel *p, double xmin, double xmax, double ymin, double *ymax, double x0, double x1,
                      double y0, double y1, double w, double h, double *bx, double *by);

/* 1 when this build can draw (cairo was found at build time). */
int plot_available(void);
/* Draw the panels in a grid of `cols` columns under `title` into path (.png or .svg). */
int plot_write(const char *path, const char *title, const PlotPanel *panels, int npanels, int cols, XrErr *e);

#endif
