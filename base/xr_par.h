/* xr_par.h: compiler helpers for hot CPU loops, shared by core's CPU backend and mining's k-NN. */
#ifndef XR_PAR_H
#define XR_PAR_H

/* An OpenMP pragma that disappears in a build without OpenMP: XR_OMP(omp parallel for ...). */
#ifdef _OPENMP
#include <omp.h>
#define XR_OMP(x) _Pragma(#x)
#else
#define XR_OMP(x)
#endif

/* An `omp simd reduction(max / min : float)` pragma for gcc only: gcc vectorizes such a loop (maxps), clang 14
 * cannot without -ffinite-math-only (not even with fmaxf) and, asked to, warns "loop not vectorized"
 * (-Wpass-failed, an error under -Werror); without the pragma clang compiles the same scalar loop silently. */
#if defined(__clang__)
#define XR_OMP_SIMD_MINMAX(x)
#else
#define XR_OMP_SIMD_MINMAX(x) XR_OMP(x)
#endif

/* Hot row kernels are compiled for three ISA levels and picked at load time (the build targets x86-64-v2). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define XR_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define XR_CLONES
#endif

#endif
