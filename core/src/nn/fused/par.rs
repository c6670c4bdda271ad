//! Splitting a kernel's work over rows: pieces of the output that tasks write independently,
//! run on rayon's pool when the work is large enough to pay for it, results in range order.

use std::ops::Range;

use rayon::prelude::*;

/// Below this many output elements a kernel runs on the calling thread.
pub const PAR_MIN: usize = 1 << 15;

/// Elements per task of an elementwise kernel.
pub const PIECE: usize = 8192;

/// `f(offset, piece)` over pieces of `out`, in parallel when large.
pub fn elementwise(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let run = |(i, piece): (usize, &mut [f32])| f(i * PIECE, piece);
    if out.len() >= PAR_MIN {
        out.par_chunks_mut(PIECE).enumerate().for_each(run);
    } else {
        out.chunks_mut(PIECE).enumerate().for_each(run);
    }
}

/// `f(offset, piece of a, same piece of b)` for two equally long buffers.
pub fn elementwise_pair(
    a: &mut [f32],
    b: &mut [f32],
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) {
    let run = |(i, (pa, pb)): (usize, (&mut [f32], &mut [f32]))| f(i * PIECE, pa, pb);
    if a.len() >= PAR_MIN {
        a.par_chunks_mut(PIECE)
            .zip(b.par_chunks_mut(PIECE))
            .enumerate()
            .for_each(run);
    } else {
        a.chunks_mut(PIECE)
            .zip(b.chunks_mut(PIECE))
            .enumerate()
            .for_each(run);
    }
}

/// Row ranges of about `chunk` rows covering `0..rows`.
pub fn ranges(rows: usize, chunk: usize) -> Vec<Range<usize>> {
    super::chunks(rows, chunk).collect()
}

/// Row ranges that never cross a group of `group_rows` consecutive rows: each group split into
/// chunks of at most `chunk` rows. With `group_rows == rows` this is [`ranges`].
pub fn group_ranges(rows: usize, group_rows: usize, chunk: usize) -> Vec<Range<usize>> {
    let group_rows = group_rows.max(1);
    (0..rows.div_ceil(group_rows))
        .flat_map(|g| {
            let start = g * group_rows;
            let end = (start + group_rows).min(rows);
            super::chunks(end - start, chunk).map(move |r| start + r.start..start + r.end)
        })
        .collect()
}

/// Rows per chunk so that a chunk covers about `PAR_MIN / 4` elements of width `width`.
pub fn chunk_rows(width: usize) -> usize {
    ((PAR_MIN / 4) / width.max(1)).max(1)
}

/// Calls `f(range, piece)` for each row range, `piece` the rows `range` of `out` (rows of
/// `width` elements); in parallel when `out` is large. The results come back in range order.
pub fn map_rows<T, F>(out: &mut [f32], width: usize, ranges: &[Range<usize>], f: F) -> Vec<T>
where
    T: Send,
    F: Fn(Range<usize>, &mut [f32]) -> T + Sync + Send,
{
    let mut pieces = Vec::with_capacity(ranges.len());
    let mut rest = out;
    let mut at = 0;
    for r in ranges {
        assert_eq!(r.start, at, "row ranges must be consecutive");
        let (piece, tail) = rest.split_at_mut((r.end - r.start) * width);
        pieces.push((r.clone(), piece));
        rest = tail;
        at = r.end;
    }
    if ranges.len() > 1 && at * width >= PAR_MIN {
        pieces.into_par_iter().map(|(r, p)| f(r, p)).collect()
    } else {
        pieces.into_iter().map(|(r, p)| f(r, p)).collect()
    }
}

/// Calls `f(i)` for `0..n` tasks, in parallel when `work` (elements touched) is large, the
/// results in task order.
pub fn map_tasks<T, F>(n: usize, work: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Sync + Send,
{
    if n > 1 && work >= PAR_MIN {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

/// Sums equally long partial vectors in their order (a deterministic reduction).
pub fn sum_partials(partials: impl IntoIterator<Item = Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0.0f32; len];
    for p in partials {
        for (t, v) in total.iter_mut().zip(&p) {
            *t += v;
        }
    }
    total
}

/// `Σ a_i` with eight running sums (vectorised; a fixed order, so deterministic).
#[inline(always)]
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut it = a.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let tail: f32 = it.remainder().iter().sum();
    lanes(acc) + tail
}

/// `Σ a_i b_i` with eight running sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut ia = a.chunks_exact(8);
    let mut ib = b.chunks_exact(8);
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let tail: f32 = ia
        .remainder()
        .iter()
        .zip(ib.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes(acc) + tail
}

#[inline(always)]
fn lanes(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))
}
