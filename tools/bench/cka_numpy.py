#!/usr/bin/env python3
"""NumPy (float64) side of the CKA benchmark (docs/PERFORMANCE.md); the Rust side is
`cargo bench -p flowlens-analysis --bench cka` and, whole process, tools/bench/cka_grid.sh.

The reference is Kornblith et al.'s feature-space linear CKA (biased and debiased from the same
products), and the Gram form, whichever is faster per call. The grid is the loop a researcher
writes over (stream, layer) pairs that computes each tap's Gram once per solver step and reuses
it for every pair (`x @ x.T`, which NumPy runs as a symmetric rank-k update, then `np.vdot` of
two Grams per pair).

    OPENBLAS_NUM_THREADS=2 /tmp/pyref/bin/python tools/bench/cka_numpy.py      # random arrays
    OPENBLAS_NUM_THREADS=2 /tmp/pyref/bin/python tools/bench/cka_numpy.py --store RUN/probes-bench
        # the grid over a feature store's .npy files (tools/bench/cka_grid.sh writes one):
        # rows enc.text, enc.noise; columns llm.h*.image; every step of seed 0
    OPENBLAS_NUM_THREADS=2 /tmp/pyref/bin/python tools/bench/cka_numpy.py --pair X.npy Y.npy
        # one pair in the Gram form (what `flowlens cka X.npy Y.npy` computes)
"""

import os
import sys
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


def gram_stats(x):
    """What every pair of a tap needs: its centred Gram, diagonal, and <K, K>."""
    x = x - x.mean(0, keepdims=True)
    k = x @ x.T
    return k, np.diag(k).copy(), np.vdot(k, k)


def from_grams(gx, gy):
    (k, a, kk), (l, b, ll) = gx, gy
    kl = np.vdot(k, l)
    biased = kl / np.sqrt(kk * ll)
    n = k.shape[0]
    na, nb = a.sum(), b.sum()
    d = helper(kl, a, b, na, nb, n) / np.sqrt(
        helper(kk, a, a, na, na, n) * helper(ll, b, b, nb, nb, n)
    )
    return biased, d


def gram_form(x, y):
    return from_grams(gram_stats(x), gram_stats(y))


def store_grid(store, rows=("enc.text", "enc.noise"), cols="llm.h*.image", seed=0):
    """The Gram-reusing loop over a feature store: per step every tap is loaded (f32 -> f64)
    and its Gram computed once, then every (row, column) pair from the Grams."""
    import glob

    col_taps = sorted(os.path.basename(p) for p in glob.glob(os.path.join(store, cols)))
    # One file per tap and seed, [steps, n, width]; each step is read alone (memory-mapped).
    steps = range(np.load(os.path.join(store, rows[0], f"seed{seed}.npy"), mmap_mode="r").shape[0])
    t0 = time.perf_counter()
    checksum, load, grams, pairs = 0.0, 0.0, 0.0, 0.0
    for step in steps:
        g = {}
        for tap in list(rows) + col_taps:
            t = time.perf_counter()
            x = np.load(os.path.join(store, tap, f"seed{seed}.npy"), mmap_mode="r")[step].astype(np.float64)
            load += time.perf_counter() - t
            t = time.perf_counter()
            g[tap] = gram_stats(x)
            grams += time.perf_counter() - t
        t = time.perf_counter()
        for r in rows:
            for c in col_taps:
                b, d = from_grams(g[r], g[c])
                checksum += b + d
        pairs += time.perf_counter() - t
    total = time.perf_counter() - t0
    n_pairs = len(steps) * len(rows) * len(col_taps)
    print(
        f"| NumPy grid {len(steps)} steps x {len(rows)} rows x {len(col_taps)} columns = {n_pairs} pairs, "
        f"Grams reused | {total:.2f} s (load {load:.2f}, Grams {grams:.2f}, pairs {pairs:.2f}) | checksum {checksum:.6f} |"
    )


def timed(f, *args, reps=3):
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = f(*args)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out


def main():
    print(f"numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    if len(sys.argv) == 3 and sys.argv[1] == "--store":
        store_grid(sys.argv[2])
        return
    if len(sys.argv) == 4 and sys.argv[1] == "--pair":
        t = time.perf_counter()
        x, y = (np.load(p).astype(np.float64) for p in sys.argv[2:])
        t1 = time.perf_counter()
        b, d = gram_form(x, y)
        t2 = time.perf_counter()
        print(f"| NumPy one pair, Gram form | load {t1 - t:.3f} s, CKA {t2 - t1:.3f} s | biased {b:.6f}, debiased {d:.6f} |")
        return
    rng = np.random.default_rng(0)
    a, b = rng.random((2048, 2048)) - 0.5, rng.random((2048, 2048)) - 0.5
    t, _ = timed(lambda: a.T @ b)
    print(f"| f64 GEMM 2048^3 | {t:.3f} s | {2 * 2048**3 / t / 1e9:.1f} GFLOP/s |")
    n, d = 2000, 2048
    t, _ = timed(lambda: a[:n] @ a[:n].T)
    print(f"| f64 Gram x @ x.T, 2000 x 2048 (syrk) | {t:.3f} s | {n * (n + 1) * d / t / 1e9:.1f} GFLOP/s useful |")
    x = rng.random((n, d)) - 0.5
    y = 0.5 * x + rng.random((n, d)) - 0.5
    tf, vf = timed(feature_form, x, y)
    tg, vg = timed(gram_form, x, y)
    print(f"| one pair, feature form | {tf:.3f} s | biased {vf[0]:.6f}, debiased {vf[1]:.6f} |")
    print(f"| one pair, Gram form | {tg:.3f} s | biased {vg[0]:.6f}, debiased {vg[1]:.6f} |")
    steps = 5
    taps = [rng.random((n, d)) - 0.5 for _ in range(25)]
    t = time.perf_counter()
    g = [gram_stats(x) for x in taps]
    for s in g[:2]:
        for l in g[2:]:
            from_grams(s, l)
    step = time.perf_counter() - t
    print(
        f"| grid, one step (2 x 23 pairs, each Gram once) | {step:.2f} s | x{steps} steps = {steps * step:.1f} s |"
    )


if __name__ == "__main__":
    main()
