//! A safe front to the `gemm` crate (the GEMM burn-flex itself uses) for the small strided
//! products inside fused kernels: every index a product touches is checked against its slice
//! before the call.

/// A matrix inside a slice: element `(i, j)` at `offset + i * rs + j * cs`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `[rows, cols]` at `offset` with row stride `rs`.
    pub fn rows(data: &'a [f32], offset: usize, rs: usize) -> Self {
        Self {
            data,
            offset,
            rs,
            cs: 1,
        }
    }

    /// The transpose view.
    pub fn t(self) -> Self {
        Self {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let last = self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs;
        assert!(
            last < self.data.len(),
            "gemm: {what} [{rows}, {cols}] reaches {last} of {}",
            self.data.len()
        );
    }
}

/// Products this large (multiply-adds) run on rayon's pool, as burn-flex decides for its own.
const PARALLEL_MIN: usize = 192 * 192 * 192;

/// `dst = (accumulate ? dst : 0) + scale * lhs @ rhs` with `lhs [m, k]`, `rhs [k, n]` and `dst`
/// row-major `[m, n]` with row stride `dst_rs` from `dst_offset`; single-threaded (the callers
/// parallelise over heads and samples).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_offset: usize,
    dst_rs: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    scale: f32,
    accumulate: bool,
) {
    gemm_with(
        m, n, k, dst, dst_offset, dst_rs, lhs, rhs, scale, accumulate, false,
    );
}

/// `scale * lhs @ rhs` as a new row-major `[m, n]` buffer (no zero fill first), threaded when
/// large.
pub fn product(m: usize, n: usize, k: usize, lhs: Mat<'_>, rhs: Mat<'_>, scale: f32) -> Vec<f32> {
    lhs.check(m, k, "lhs");
    rhs.check(k, n, "rhs");
    let mut out = Vec::<f32>::with_capacity(m * n);
    if k == 0 {
        out.resize(m * n, 0.0);
        return out;
    }
    if m * n > 0 {
        // SAFETY: as in `gemm_with`; the destination is the vector's own `m * n` capacity, fully
        // written by the product (read_dst = false) before its length is set.
        unsafe {
            run(
                m,
                n,
                k,
                out.as_mut_ptr(),
                n,
                lhs,
                rhs,
                scale,
                false,
                m * n * k >= PARALLEL_MIN,
            );
            out.set_len(m * n);
        }
    }
    out
}

/// [`gemm`], threaded when `parallel` and large.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_offset: usize,
    dst_rs: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    scale: f32,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        dst_offset + (m - 1) * dst_rs + n <= dst.len(),
        "gemm: destination [{m}, {n}] out of bounds"
    );
    lhs.check(m, k, "lhs");
    rhs.check(k, n, "rhs");
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                dst[dst_offset + i * dst_rs..][..n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: every element the product reads or writes lies inside its slice (checked above:
    // the largest index of each operand is in bounds and strides are non-negative), `dst` is
    // borrowed mutably and so cannot alias `lhs` or `rhs`.
    unsafe {
        let dst = dst.as_mut_ptr().add(dst_offset);
        let parallel = parallel && m * n * k >= PARALLEL_MIN;
        run(m, n, k, dst, dst_rs, lhs, rhs, scale, accumulate, parallel);
    }
}

/// # Safety
/// `dst` must be valid for writes (and reads when `accumulate`) of `[m, n]` with row stride
/// `dst_rs`, not aliasing the operands, whose extents the caller has checked.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    scale: f32,
    accumulate: bool,
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    if parallel && threads > 1 {
        // One single-threaded product per thread on a slice of the larger of m and n: on two
        // cores 250-330 GFLOP/s where the crate's own rayon split reached 170-300 (weight
        // gradients `[128, 1296] x [1296, 512]`: 260-280 against 170-190). Every element is
        // still one product over all of k with k-blocking set by k alone, so the values do not
        // depend on the split (nn::fused::tests checks 1 against 4 threads).
        let (long, align) = if m >= n { (m, 8) } else { (n, 16) };
        let piece = long.div_ceil(threads).div_ceil(align) * align;
        let dst = SendPtr(dst);
        rayon::scope(|scope| {
            for start in (0..long).step_by(piece.max(1)) {
                let len = piece.min(long - start);
                scope.spawn(move |_| {
                    let dst = dst;
                    // SAFETY: the pieces write disjoint rows (or columns) of the caller's `dst`
                    // and read inside the checked operands.
                    unsafe {
                        if m >= n {
                            let lhs = Mat {
                                offset: lhs.offset + start * lhs.rs,
                                ..lhs
                            };
                            let d = dst.0.add(start * dst_rs);
                            run(len, n, k, d, dst_rs, lhs, rhs, scale, accumulate, false);
                        } else {
                            let rhs = Mat {
                                offset: rhs.offset + start * rhs.cs,
                                ..rhs
                            };
                            let d = dst.0.add(start);
                            run(m, len, k, d, dst_rs, lhs, rhs, scale, accumulate, false);
                        }
                    }
                });
            }
        });
        return;
    }
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// A destination pointer handed to the pieces of one product (each writes its own part).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pieces of `run` write disjoint parts of the destination and finish inside its
// `rayon::scope`, while the caller's exclusive borrow is alive.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_products_match_loops() {
        // lhs [3, 4] inside a wider buffer, rhs transposed, accumulate.
        let a: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..40).map(|i| (i as f32 * 0.11).cos()).collect();
        let (m, n, k) = (3, 5, 4);
        let lhs = Mat::rows(&a, 2, 10);
        let rhs = Mat::rows(&b, 1, 6).t(); // element (kk, j) = b[1 + j * 6 + kk]
        let mut dst = vec![1.0f32; 3 * 7];
        gemm(m, n, k, &mut dst, 1, 7, lhs, rhs, 0.5, true);
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for kk in 0..k {
                    s += a[2 + i * 10 + kk] * b[1 + j * 6 + kk];
                }
                let got = dst[1 + i * 7 + j];
                assert!(
                    (got - (1.0 + 0.5 * s)).abs() < 1e-5,
                    "{i} {j}: {got} vs {s}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_bounds_destination_is_refused() {
        let a = vec![0.0f32; 4];
        let mut dst = vec![0.0f32; 3];
        gemm(
            2,
            2,
            1,
            &mut dst,
            0,
            2,
            Mat::rows(&a, 0, 1),
            Mat::rows(&a, 0, 2),
            1.0,
            false,
        );
    }
}
