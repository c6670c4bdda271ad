//! Dense f64 linear algebra on ndarray arrays through faer (pure Rust, parallel with rayon):
//! the products and the symmetric eigendecomposition the estimators need. ndarray-linalg would
//! need a system LAPACK, which a fresh machine does not have.

use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par, Side};
use ndarray::{Array1, Array2, ArrayView2};

use crate::error::{AnalysisError, Result};

/// Every thread of the current rayon pool.
pub(crate) fn par() -> Par {
    Par::rayon(0)
}

/// Runs `f` on a faer view of `a` (copied to row-major only if it is not already).
fn with_view<R>(a: ArrayView2<f64>, f: impl FnOnce(MatRef<'_, f64>) -> R) -> R {
    let (r, c) = a.dim();
    let owned;
    let slice = match a.as_slice() {
        Some(s) => s,
        None => {
            owned = a.as_standard_layout().into_owned();
            owned.as_slice().expect("standard layout")
        }
    };
    f(MatRef::from_row_major_slice(slice, r, c))
}

fn out_mut(out: &mut Array2<f64>) -> MatMut<'_, f64> {
    let (r, c) = out.dim();
    MatMut::from_row_major_slice_mut(out.as_slice_mut().expect("fresh array"), r, c)
}

/// `a^T b`: `[n, p]^T [n, q] -> [p, q]`.
pub fn at_b(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
    let mut out = Array2::zeros((a.ncols(), b.ncols()));
    with_view(a, |a| {
        with_view(b, |b| {
            faer::linalg::matmul::matmul(
                out_mut(&mut out),
                Accum::Replace,
                a.transpose(),
                b,
                1.0,
                par(),
            )
        })
    });
    out
}

/// `a b`: `[m, k] [k, n] -> [m, n]`.
pub fn a_b(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
    let mut out = Array2::zeros((a.nrows(), b.ncols()));
    with_view(a, |a| {
        with_view(b, |b| {
            faer::linalg::matmul::matmul(out_mut(&mut out), Accum::Replace, a, b, 1.0, par())
        })
    });
    out
}

/// `a b^T`: `[m, d]`, `[n, d] -> [m, n]`.
pub fn a_bt(a: ArrayView2<f64>, b: ArrayView2<f64>) -> Array2<f64> {
    let mut out = Array2::zeros((a.nrows(), b.nrows()));
    with_view(a, |a| {
        with_view(b, |b| {
            faer::linalg::matmul::matmul(
                out_mut(&mut out),
                Accum::Replace,
                a,
                b.transpose(),
                1.0,
                par(),
            )
        })
    });
    out
}

/// The lower triangle (diagonal included) of `m m^T`; the strict upper triangle is left 0.
fn lower_self_product(m: MatRef<'_, f64>, par: Par) -> Array2<f64> {
    let n = m.nrows();
    let mut out = Array2::zeros((n, n));
    lower_self_product_into(m, out.as_slice_mut().expect("fresh array"), par);
    out
}

/// The lower triangle of `a a^T` (`[n, d]`) into `out` (`[n, n]`, row-major) on `par` threads;
/// the strict upper triangle is not written. The grid's Gram product (`Par::Seq`: one thread).
pub fn gram_lower_into(a: ArrayView2<f64>, out: &mut [f64], par: Par) {
    with_view(a, |m| lower_self_product_into(m, out, par));
}

/// The lower triangle of `m m^T` into `out` (`[n, n]`, row-major); the strict upper triangle is
/// not written.
fn lower_self_product_into(m: MatRef<'_, f64>, out: &mut [f64], par: Par) {
    let n = m.nrows();
    faer::linalg::matmul::triangular::matmul(
        MatMut::from_row_major_slice_mut(out, n, n),
        BlockStructure::TriangularLower,
        Accum::Replace,
        m,
        BlockStructure::Rectangular,
        m.transpose(),
        BlockStructure::Rectangular,
        1.0,
        par,
    );
}

/// The largest `n x n` scratch triangle a thread keeps between calls of [`packed_gram_on`].
const KEPT_SCRATCH_BYTES: usize = 256 << 20;

/// [`pack_symmetric`] of the Gram `a a^T` (`[n, d]`), on `par` threads. The triangle goes into
/// a scratch buffer that the thread keeps for the next call (no fresh `n x n` buffer to fault
/// in and zero each time: on the development VM first-touch memory cost more than packing).
pub(crate) fn packed_gram_on(a: ArrayView2<f64>, par: Par) -> Vec<f64> {
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let n = a.nrows();
    // Taken out while in use: a product on several threads may run another call on this one.
    let mut buf = SCRATCH.take();
    if buf.len() < n * n {
        buf = vec![0.0; n * n];
    }
    gram_lower_into(a, &mut buf[..n * n], par);
    let packed = pack_lower(&buf[..n * n], n);
    if buf.len() * 8 <= KEPT_SCRATCH_BYTES {
        SCRATCH.set(buf);
    }
    packed
}

/// Copies the lower triangle onto the upper one.
fn mirror_lower(mut m: Array2<f64>) -> Array2<f64> {
    let n = m.nrows();
    for i in 0..n {
        for j in 0..i {
            m[[j, i]] = m[[i, j]];
        }
    }
    m
}

/// The symmetric product `a a^T` (`[n, d] -> [n, n]`), computing one triangle and mirroring it.
pub fn gram(a: ArrayView2<f64>) -> Array2<f64> {
    mirror_lower(gram_lower(a))
}

/// The lower triangle (diagonal included) of `a a^T`; the strict upper triangle is left 0.
pub fn gram_lower(a: ArrayView2<f64>) -> Array2<f64> {
    gram_lower_on(a, par())
}

/// [`gram_lower`] on `par` threads (`Par::Seq`: the calling thread only, for taps prepared
/// side by side).
pub(crate) fn gram_lower_on(a: ArrayView2<f64>, par: Par) -> Array2<f64> {
    with_view(a, |m| lower_self_product(m, par))
}

/// `a^T a` (`[n, d] -> [d, d]`), one triangle computed and mirrored.
pub fn cross_gram(a: ArrayView2<f64>) -> Array2<f64> {
    cross_gram_on(a, par())
}

/// [`cross_gram`] on `par` threads.
pub(crate) fn cross_gram_on(a: ArrayView2<f64>, par: Par) -> Array2<f64> {
    mirror_lower(with_view(a, |m| lower_self_product(m.transpose(), par)))
}

/// Whether every value is finite, in one vectorised pass (`v * 0` is 0 for a finite `v`, NaN
/// otherwise).
pub fn all_finite(s: &[f64]) -> bool {
    let chunks = s.chunks_exact(8);
    let tail = chunks.remainder().iter().all(|v| v.is_finite());
    let mut acc = [0.0f64; 8];
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k] * 0.0;
        }
    }
    tail && acc.iter().all(|a| *a == 0.0)
}

/// Elements per block of [`dots`]: two rows' blocks and the column's stay in the L1 cache.
const DOT_BLOCK: usize = 1024;

/// `sum_i a_i b_i` in a fixed order: eight running sums over the elements taken eight at a
/// time (the loop vectorises), added in a fixed tree, then the tail. The value depends on `a`
/// and `b` only, never on what is computed alongside ([`dots`] gives the same bits).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    dots(&[a], b)[0]
}

/// `[dot(r, col) for r in rows]`, reading `col` once: block by block, every row's running sums
/// advanced over the block. Each value is bit for bit [`dot`] of its row and `col`.
pub fn dots(rows: &[&[f64]], col: &[f64]) -> Vec<f64> {
    assert!(
        rows.iter().all(|r| r.len() == col.len()),
        "dot products of slices of different lengths"
    );
    let whole = col.len() - col.len() % 8;
    let mut acc = vec![[0.0f64; 8]; rows.len()];
    for start in (0..whole).step_by(DOT_BLOCK) {
        let end = (start + DOT_BLOCK).min(whole);
        let c = &col[start..end];
        for (row, acc) in rows.iter().zip(&mut acc) {
            for (x, y) in row[start..end].chunks_exact(8).zip(c.chunks_exact(8)) {
                for k in 0..8 {
                    acc[k] += x[k] * y[k];
                }
            }
        }
    }
    rows.iter()
        .zip(&acc)
        .map(|(row, a)| {
            let tail: f64 = row[whole..]
                .iter()
                .zip(&col[whole..])
                .map(|(x, y)| x * y)
                .sum();
            (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))) + tail
        })
        .collect()
}

/// Packs the lower triangle of a symmetric matrix into `n (n + 1) / 2` values, off-diagonal
/// entries scaled by sqrt(2), so that `pack(K) . pack(L) = <K, L>_F`.
pub fn pack_symmetric(lower: &Array2<f64>) -> Vec<f64> {
    let lower = lower.as_standard_layout();
    pack_lower(lower.as_slice().expect("standard layout"), lower.nrows())
}

/// [`pack_symmetric`] of a row-major `[n, n]` slice.
fn pack_lower(lower: &[f64], n: usize) -> Vec<f64> {
    let r2 = std::f64::consts::SQRT_2;
    let mut out = Vec::with_capacity(n * (n + 1) / 2);
    if n == 0 {
        return out;
    }
    for (i, row) in lower.chunks_exact(n).enumerate() {
        out.extend(row[..i].iter().map(|v| v * r2));
        out.push(row[i]);
    }
    out
}

/// Inverse of [`pack_symmetric`]: the full symmetric matrix.
pub fn unpack_symmetric(packed: &[f64], n: usize) -> Array2<f64> {
    let r2 = std::f64::consts::SQRT_2;
    let mut out = Array2::zeros((n, n));
    let mut k = 0;
    for i in 0..n {
        for j in 0..i {
            out[[i, j]] = packed[k] / r2;
            k += 1;
        }
        out[[i, i]] = packed[k];
        k += 1;
    }
    mirror_lower(out)
}

/// Eigendecomposition of a symmetric matrix: eigenvalues ascending and the eigenvectors as
/// columns.
pub fn symmetric_eigen(a: ArrayView2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    let n = a.nrows();
    if a.ncols() != n {
        return Err(AnalysisError::Shape {
            what: "symmetric eigendecomposition".into(),
            reason: format!("matrix is {}x{}, not square", n, a.ncols()),
        });
    }
    with_view(a, |m| {
        let evd = m
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| AnalysisError::Linalg(format!("{e:?}")))?;
        let values = Array1::from_iter(evd.S().column_vector().iter().copied());
        let u = evd.U();
        let vectors = Array2::from_shape_fn((n, n), |(i, j)| u[(i, j)]);
        Ok((values, vectors))
    })
}

/// Eigenvalues only, ascending.
pub fn symmetric_eigenvalues(a: ArrayView2<f64>) -> Result<Vec<f64>> {
    with_view(a, |m| {
        m.self_adjoint_eigenvalues(Side::Lower)
            .map_err(|e| AnalysisError::Linalg(format!("{e:?}")))
    })
}
