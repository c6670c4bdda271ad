//! CKA throughput at the paper's sizes (run in release; figures in docs/PERFORMANCE.md).
//!
//! `cargo bench -p flowlens-analysis --bench cka` (FLOWLENS_BENCH_STEPS=N sets the grid's
//! solver steps, default 5; FLOWLENS_BENCH_ONLY=live|gram|pair|grid runs one part)
//!
//! 1. this machine's f64 GEMM peak through faer, on one thread and on all (the yardstick for
//!    GFLOP/s), and the symmetric Gram product `X X^T` (one triangle) of a 2000 x 2048 tap: on
//!    one thread, two side by side (what the grid does), one on every thread;
//! 2. one pair, n = 2000, d = 2048 x 2048, both estimators;
//! 3. the grid as `flowlens grid --a enc.text,enc.noise` computes it (`SeedGrid::compute_many`):
//!    5 solver steps x (2 encoder streams x 23 LLM layers), n = 2000, d = 2048;
//! 4. the streaming accumulator's peak memory at n = 20k and n = 200k (must not grow);
//! 5. the live accumulator's update cost per sampling batch.
//!
//! tools/bench/cka_numpy.py runs the NumPy side; tools/bench/cka_whole_process.sh both, whole
//! process, on a feature store.

use std::time::Instant;

use faer::{Accum, MatMut, MatRef, Par};
use flowlens_analysis::cka::{self, Estimator};
use flowlens_analysis::grid::{GridSpec, SeedGrid};
use flowlens_analysis::linalg;
use flowlens_analysis::streaming::StreamingCka;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn random(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Array2<f64> {
    Array2::from_shape_simple_fn((n, d), || rng.random::<f64>() - 0.5)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

/// 5. The live CKA accumulator's update cost per sampling batch (`flowlens sample
/// --cka-pairs`): one pair, one solver step, `m` pooled rows of width `d` into the moments store.
fn live_updates(rng: &mut ChaCha8Rng) {
    for (d, m) in [(128, 8), (128, 32), (2048, 8), (2048, 32)] {
        let mut acc = StreamingCka::moments(d, d);
        let x = random(rng, m, d);
        let y = random(rng, m, d);
        acc.update(x.view(), y.view()).unwrap();
        let mut times: Vec<f64> = (0..21)
            .map(|_| {
                let t = Instant::now();
                acc.update(x.view(), y.view()).unwrap();
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "| live CKA update, d={d}x{d}, batch of {m} rows | {:.3} ms |",
            times[10] * 1e3
        );
    }
}

/// Median seconds of `reps` runs of `f` after one warm-up.
fn median_time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

/// The lower triangle of `x x^T` into `out`, as the grid computes each tap's Gram.
fn gram_lower(x: &Array2<f64>, out: &mut [f64], par: Par) {
    linalg::gram_lower_into(x.view(), out, par);
}

/// Part 1: GEMM peak and the symmetric Gram product on one thread, side by side, on every thread.
fn gram_rates(rng: &mut ChaCha8Rng) {
    let a = random(rng, 2048, 2048);
    let b = random(rng, 2048, 2048);
    let gemm = |par: Par| {
        let mut out = vec![0.0; 2048 * 2048];
        let (a, b) = (
            MatRef::from_row_major_slice(a.as_slice().unwrap(), 2048, 2048),
            MatRef::from_row_major_slice(b.as_slice().unwrap(), 2048, 2048),
        );
        median_time(5, || {
            faer::linalg::matmul::matmul(
                MatMut::from_row_major_slice_mut(&mut out, 2048, 2048),
                Accum::Replace,
                a.transpose(),
                b,
                1.0,
                par,
            )
        })
    };
    let flops = 2.0 * 2048f64.powi(3);
    for (what, par) in [("1 thread", Par::Seq), ("every thread", Par::rayon(0))] {
        let t = gemm(par);
        println!(
            "| f64 GEMM 2048^3 (faer), {what} | {t:.3} s | {:.1} GFLOP/s |",
            flops / t / 1e9
        );
    }
    let (n, d) = (2000, 2048);
    let x = random(rng, n, d);
    let y = random(rng, n, d);
    // Useful flops of one triangle: n (n + 1) d.
    let useful = (n * (n + 1)) as f64 * d as f64;
    let (mut k, mut l) = (vec![0.0; n * n], vec![0.0; n * n]);
    let t = median_time(5, || gram_lower(&x, &mut k, Par::Seq));
    println!(
        "| Gram X X^T {n} x {d}, one triangle, 1 thread | {t:.3} s | {:.1} GFLOP/s |",
        useful / t / 1e9
    );
    let t = median_time(5, || {
        rayon::join(
            || gram_lower(&x, &mut k, Par::Seq),
            || gram_lower(&y, &mut l, Par::Seq),
        );
    });
    println!(
        "| two Grams side by side, 1 thread each (the grid) | {t:.3} s | {:.1} GFLOP/s |",
        2.0 * useful / t / 1e9
    );
    let t = median_time(5, || gram_lower(&x, &mut k, Par::rayon(0)));
    println!(
        "| one Gram on every thread | {t:.3} s | {:.1} GFLOP/s |",
        useful / t / 1e9
    );
}

/// Part 2: one pair through `cka::terms` (the route of `flowlens cka`).
fn one_pair(rng: &mut ChaCha8Rng) {
    let (n, d) = (2000, 2048);
    let x = random(rng, n, d);
    let y = &x * 0.5 + random(rng, n, d);
    let mut values = (0.0, 0.0);
    let t = median_time(5, || {
        let terms = cka::terms(x.view(), y.view()).unwrap();
        values = (
            terms.value(Estimator::Biased, "X", "Y").unwrap(),
            terms.value(Estimator::Debiased, "X", "Y").unwrap(),
        );
    });
    // Two symmetric Grams of n x n with inner dimension d (one triangle each).
    let flops = 2.0 * (n * (n + 1)) as f64 * d as f64;
    println!(
        "| one pair n={n}, d={d}x{d}, biased+debiased | {t:.3} s | {:.1} GFLOP/s | biased {:.6}, debiased {:.6} |",
        flops / t / 1e9,
        values.0,
        values.1
    );
}

/// Part 3, the grid through `SeedGrid::compute_many`: two row taps against 23 column taps at
/// each step. The 25 arrays are generated once; each read returns a copy (as a file read would),
/// and every step recomputes every Gram.
fn grid(rng: &mut ChaCha8Rng) {
    let steps: usize = std::env::var("FLOWLENS_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (n, d, layers) = (2000, 2048, 23);
    let streams = ["enc.text", "enc.noise"];
    let cols: Vec<String> = (1..=layers).map(|l| format!("llm.h{l:02}.image")).collect();
    let arrays: std::collections::BTreeMap<String, Array2<f64>> = streams
        .iter()
        .map(|s| s.to_string())
        .chain(cols.iter().cloned())
        .map(|t| (t, random(rng, n, d)))
        .collect();
    let all: std::collections::BTreeSet<(u64, usize)> = (0..steps).map(|k| (0, k)).collect();
    let specs: Vec<GridSpec> = streams
        .iter()
        .map(|a| GridSpec {
            a: a.to_string(),
            b: "llm.h*.image".into(),
            rows: cols.clone(),
            steps: (0..steps).collect(),
            ts: (0..steps).map(|k| k as f64 / steps as f64).collect(),
            seeds: vec![0],
            estimator: Estimator::Debiased,
        })
        .collect();
    let t = Instant::now();
    let grids = SeedGrid::compute_many(
        specs,
        |_| all.clone(),
        |tap, _, _| -> Result<Array2<f64>, flowlens_analysis::error::AnalysisError> {
            Ok(arrays[tap].clone())
        },
        &[],
    )
    .unwrap();
    let total = t.elapsed().as_secs_f64();
    let checksum: f64 = grids
        .iter()
        .flat_map(|g| g.values.iter().flatten().flat_map(|c| c.values()))
        .sum();
    let grams = steps * (streams.len() + layers);
    let flops = grams as f64 * (n * (n + 1)) as f64 * d as f64;
    println!(
        "| grid {steps} steps x {} rows x {layers} columns = {} pairs, n={n}, d={d} ({grams} Grams) | {total:.2} s | {:.1} GFLOP/s | peak RSS {:.0} MiB | checksum {checksum:.6} |",
        streams.len(),
        steps * streams.len() * layers,
        flops / total / 1e9,
        peak_rss_mib()
    );
}

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!("threads: {}", rayon::current_num_threads());
    let only = std::env::var("FLOWLENS_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    if run("live") {
        live_updates(&mut rng);
    }
    if run("streaming") {
        // (run first, before the large allocations) Streaming memory: the moments store must
        // not grow with n.
        let d = 256;
        let mut acc = StreamingCka::moments(d, d);
        let chunk_x = random(&mut rng, 1000, d);
        let chunk_y = random(&mut rng, 1000, d);
        let base = peak_rss_mib();
        let mut at_20k = 0.0;
        let t = Instant::now();
        for i in 0..200 {
            acc.update(chunk_x.view(), chunk_y.view()).unwrap();
            if i == 19 {
                at_20k = peak_rss_mib();
            }
        }
        println!(
            "| streaming moments d={d}x{d}: peak RSS before {base:.0} MiB, after n=20k {at_20k:.0} MiB, after n=200k {:.0} MiB | {:.2} s for 200k rows ({:.0} rows/s) | debiased {:.6} |",
            peak_rss_mib(),
            t.elapsed().as_secs_f64(),
            200_000.0 / t.elapsed().as_secs_f64(),
            acc.value(Estimator::Debiased).unwrap()
        );
    }
    if run("gram") {
        gram_rates(&mut rng);
    }
    if run("pair") {
        one_pair(&mut rng);
    }
    if run("grid") {
        grid(&mut rng);
    }
}
