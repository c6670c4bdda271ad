//! CKA throughput at the paper's sizes (run in release; figures in docs/PERFORMANCE.md).
//!
//! `cargo bench -p flowlens-analysis --bench cka` (FLOWLENS_BENCH_STEPS=N shortens the grid)
//!
//! 1. this machine's f64 GEMM peak through faer (the yardstick for GFLOP/s);
//! 2. one pair, n = 2000, d = 2048 x 2048, both estimators;
//! 3. the full grid: 30 solver steps x (2 encoder streams x 23 LLM layers), n = 2000, d = 2048;
//! 4. the streaming accumulator's peak memory at n = 20k and n = 200k (must not grow);
//! 5. the live accumulator's update cost per sampling batch (`FLOWLENS_BENCH_ONLY=live` runs
//!    only this part).
//!
//! tools/bench/cka_numpy.py runs the NumPy side.

use std::time::Instant;

use flowlens_analysis::cka::{self, Estimator};
use flowlens_analysis::grid::{self, PreparedTap};
use flowlens_analysis::linalg;
use flowlens_analysis::streaming::StreamingCka;
use ndarray::{Array2, ArrayView2};
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

fn main() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    println!("threads: {}", rayon::current_num_threads());
    if std::env::var("FLOWLENS_BENCH_ONLY").is_ok_and(|v| v == "live") {
        live_updates(&mut rng);
        return;
    }
    live_updates(&mut rng);

    // 4. (run first, before the large allocations) Streaming memory: the moments store must not grow with n.
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

    // 1. GEMM peak.
    let a = random(&mut rng, 2048, 2048);
    let b = random(&mut rng, 2048, 2048);
    let _ = linalg::at_b(a.view(), b.view());
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        std::hint::black_box(linalg::at_b(a.view(), b.view()));
        best = best.min(t.elapsed().as_secs_f64());
    }
    let peak = 2.0 * 2048f64.powi(3) / best / 1e9;
    println!(
        "\n| f64 GEMM 2048^3 (faer) | {:.3} s | {peak:.1} GFLOP/s |",
        best
    );

    // 2. One pair.
    let (n, d) = (2000, 2048);
    let x = random(&mut rng, n, d);
    let y = &x.slice(ndarray::s![.., ..]) * 0.5 + random(&mut rng, n, d);
    let mut times = Vec::new();
    let mut values = (0.0, 0.0);
    for _ in 0..3 {
        let t = Instant::now();
        let terms = cka::terms(x.view(), y.view()).unwrap();
        values = (
            terms.value(Estimator::Biased, "X", "Y").unwrap(),
            terms.value(Estimator::Debiased, "X", "Y").unwrap(),
        );
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    // Two symmetric Grams of n x n with inner dimension d (one triangle each).
    let flops = 2.0 * (n * (n + 1)) as f64 * d as f64;
    println!(
        "| one pair n={n}, d={d}x{d}, biased+debiased | {:.3} s | {:.1} GFLOP/s ({:.0}% of GEMM peak) | biased {:.6}, debiased {:.6} |",
        times[1],
        flops / times[1] / 1e9,
        100.0 * flops / times[1] / 1e9 / peak,
        values.0,
        values.1
    );

    // 3. The grid, step by step (features of each step generated outside the timing).
    let steps: usize = std::env::var("FLOWLENS_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let (layers, streams) = (23, 2);
    let mut total = 0.0;
    let mut checksum = 0.0;
    for step in 0..steps {
        let taps: Vec<(String, Array2<f64>)> = (0..streams + layers)
            .map(|i| (format!("s{step}t{i}"), random(&mut rng, n, d)))
            .collect();
        let t = Instant::now();
        let views: Vec<(String, ArrayView2<f64>)> =
            taps.iter().map(|(k, v)| (k.clone(), v.view())).collect();
        let prepared: Vec<PreparedTap> = grid::prepare_taps(&views).unwrap();
        let (stream_taps, llm_taps) = prepared.split_at(streams);
        let terms = grid::pair_terms(stream_taps, llm_taps).unwrap();
        for row in &terms {
            for t in row {
                checksum += t.value(Estimator::Debiased, "a", "b").unwrap();
                checksum += t.value(Estimator::Biased, "a", "b").unwrap();
            }
        }
        total += t.elapsed().as_secs_f64();
    }
    let grid_flops = steps as f64 * (streams + layers) as f64 * (n * (n + 1)) as f64 * d as f64;
    println!(
        "| grid {steps} steps x {streams} streams x {layers} layers = {} pairs, n={n}, d={d}, both estimators | {total:.1} s | {:.1} GFLOP/s | peak RSS {:.0} MiB | checksum {checksum:.3} |",
        steps * streams * layers,
        grid_flops / total / 1e9,
        peak_rss_mib()
    );
}
