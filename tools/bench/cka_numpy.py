#!/usr/bin/env python3
"""NumPy (float64) side of the CKA benchmark (docs/PERFORMANCE.md); the Rust side is
`cargo bench -p flowlens-analysis --bench cka`.

The reference is Kornblith et al.'s feature-space linear CKA (biased and debiased from the same
products), and the Gram form, whichever is faster per call; the grid is the loop a researcher
writes over (stream, layer) pairs, measured for one solver step and multiplied by the step count.

    OPENBLAS_NUM_THREADS=1 /tmp/pyref/bin/python tools/bench/cka_numpy.py
    OPENBLAS_NUM_THREADS=2 /tmp/pyref/bin/python tools/bench/cka_numpy.py
"""

import os
import time

import numpy as np


def helper(xty, ssx, ssy, nx, ny, n):
    return xty - n / (n - 2.0) * ssx.dot(ssy) + nx * ny / ((n - 1) * (n - 2))


def feature_form(x, y):
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    xy = np.linalg.norm(x.T @ y) ** 2
    xx = np.linalg.norm(x.T @ x)
    yy = np.linalg.norm(y.T @ y)
    biased = xy / (xx * yy)
    n = x.shape[0]
    ssx, ssy = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    nx, ny = ssx.sum(), ssy.sum()
    d = helper(xy, ssx, ssy, nx, ny, n) / np.sqrt(
        helper(xx**2, ssx, ssx, nx, nx, n) * helper(yy**2, ssy, ssy, ny, ny, n)
    )
    return biased, d


def gram_form(x, y):
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    k, l = x @ x.T, y @ y.T
    kl, kk, ll = (k * l).sum(), (k * k).sum(), (l * l).sum()
    biased = kl / np.sqrt(kk * ll)
    n = x.shape[0]
    a, b = np.diag(k).copy(), np.diag(l).copy()
    na, nb = a.sum(), b.sum()
    d = helper(kl, a, b, na, nb, n) / np.sqrt(
        helper(kk, a, a, na, na, n) * helper(ll, b, b, nb, nb, n)
    )
    return biased, d


def timed(f, *args, reps=3):
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = f(*args)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out


def main():
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    rng = np.random.default_rng(0)
    a, b = rng.random((2048, 2048)) - 0.5, rng.random((2048, 2048)) - 0.5
    t, _ = timed(lambda: a.T @ b)
    print(f"| f64 GEMM 2048^3 | {t:.3f} s | {2 * 2048**3 / t / 1e9:.1f} GFLOP/s |")
    n, d = 2000, 2048
    x = rng.random((n, d)) - 0.5
    y = 0.5 * x + rng.random((n, d)) - 0.5
    tf, vf = timed(feature_form, x, y)
    tg, vg = timed(gram_form, x, y)
    print(f"| one pair, feature form | {tf:.3f} s | biased {vf[0]:.6f}, debiased {vf[1]:.6f} |")
    print(f"| one pair, Gram form | {tg:.3f} s | biased {vg[0]:.6f}, debiased {vg[1]:.6f} |")
    best = gram_form if tg < tf else feature_form
    taps = [rng.random((n, d)) - 0.5 for _ in range(25)]
    t = time.perf_counter()
    for s in taps[:2]:
        for l in taps[2:]:
            best(s, l)
    step = time.perf_counter() - t
    print(f"| grid, one step (2 x 23 pairs, {best.__name__}) | {step:.1f} s | x30 steps = {30 * step:.0f} s |")


if __name__ == "__main__":
    main()
