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

/* 1 when this build can draw (cairo was found at build time). */
int plot_available(void);
/* Draw the panels in a grid of `cols` columns under `title` into path (.png or .svg). */
int plot_write(const char *path, const char *title, const PlotPanel *panels, int npanels, int cols, XrErr *e);

#endif
