//! Live CKA while sampling: exact streaming accumulators (the analysis crate's
//! [`StreamingCka`]) for configured tap pairs, one per pair, solver step and sampling seed,
//! updated as each batch's pooled rows arrive, and written to `cka_live.json` next to the feature
//! store after every batch (write-then-rename), so a reader (the app) can show the partial grid
//! while the sampler works. Each seed's CKA is over its own prompts; a step shows the mean and SE
//! over seeds. Seeds are never pooled into one accumulator: every prompt would enter once per
//! seed, and repeated rows void the debiased estimator.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use flowlens_analysis::Estimator;
use flowlens_analysis::streaming::StreamingCka;
use flowlens_core::store::{
    LIVE_FORMAT, LiveCkaSnapshot, LivePair, LiveSeed, LiveStep, ProbeObserver,
};
use ndarray::ArrayView2;

/// Parses `A:B,C:D` into tap pairs.
pub fn parse_pairs(text: &str) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((a, b)) = item.split_once(':') else {
            bail!("--cka-pairs: `{item}` is not `TAP_A:TAP_B` (e.g. enc.text:llm.h02.text)");
        };
        pairs.push((a.trim().to_string(), b.trim().to_string()));
    }
    Ok(pairs)
}

/// One batch's rows per tap, as f64 with their width.
type BatchRows = BTreeMap<String, (Vec<f64>, usize)>;

/// The observer.
pub struct LiveCka {
    pairs: Vec<(String, String)>,
    path: PathBuf,
    /// Rows of the current batch per (seed, step, offset) and tap, as f64 with their width.
    pending: HashMap<(u64, usize, usize), BatchRows>,
    /// Accumulators per (pair index, step, seed).
    acc: BTreeMap<(usize, usize, u64), StreamingCka>,
    /// Time spent in accumulator updates, and their count.
    update_seconds: f64,
    updates: usize,
    last_write: Option<Instant>,
    error: Option<anyhow::Error>,
    verbose: bool,
}

impl LiveCka {
    pub fn new(pairs: Vec<(String, String)>, path: PathBuf, verbose: bool) -> Self {
        Self {
            pairs,
            path,
            pending: HashMap::new(),
            acc: BTreeMap::new(),
            update_seconds: 0.0,
            updates: 0,
            last_write: None,
            error: None,
            verbose,
        }
    }

    /// Mean seconds per accumulator update (one pair, one step, one batch).
    pub fn mean_update_seconds(&self) -> f64 {
        self.update_seconds / self.updates.max(1) as f64
    }

    /// The current values.
    pub fn snapshot(&self) -> LiveCkaSnapshot {
        let value = |acc: &StreamingCka, e: Estimator| acc.value(e).ok().filter(|v| v.is_finite());
        let pairs = self
            .pairs
            .iter()
            .enumerate()
            .map(|(i, (a, b))| LivePair {
                a: a.clone(),
                b: b.clone(),
                steps: {
                    let mut steps: BTreeMap<usize, Vec<LiveSeed>> = BTreeMap::new();
                    for (&(_, step, seed), acc) in self.acc.range((i, 0, 0)..(i + 1, 0, 0)) {
                        steps.entry(step).or_default().push(LiveSeed {
                            biased: value(acc, Estimator::Biased),
                            debiased: value(acc, Estimator::Debiased),
                            n: acc.n(),
                            seed,
                        });
                    }
                    steps
                        .into_iter()
                        .map(|(step, seeds)| LiveStep::of_seeds(step, seeds))
                        .collect()
                },
            })
            .collect();
        LiveCkaSnapshot {
            format: LIVE_FORMAT.into(),
            over: "mean and SE over sampling seeds; each seed's CKA over its own prompts".into(),
            pairs,
            updates: self.updates,
            mean_update_seconds: self.mean_update_seconds(),
        }
    }

    fn write(&mut self) -> Result<()> {
        if self.pairs.is_empty() {
            return Ok(());
        }
        self.snapshot().write(&self.path)?;
        self.last_write = Some(Instant::now());
        Ok(())
    }

    /// Writes the final values; reports an error an update met.
    pub fn finish(mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.write()?;
        if self.verbose && !self.pairs.is_empty() {
            eprintln!(
                "live CKA: {} accumulator updates, {:.3} ms each; {}",
                self.updates,
                self.mean_update_seconds() * 1e3,
                self.path.display()
            );
        }
        Ok(())
    }

    fn update(&mut self, key: (u64, usize, usize)) -> Result<()> {
        let Some(rows) = self.pending.get(&key) else {
            return Ok(());
        };
        let (seed, step) = (key.0, key.1);
        for (i, (a, b)) in self.pairs.iter().enumerate() {
            let (Some((x, dx)), Some((y, dy))) = (rows.get(a), rows.get(b)) else {
                continue;
            };
            let m = x.len() / dx;
            let xv = ArrayView2::from_shape((m, *dx), x)?;
            let yv = ArrayView2::from_shape((m, *dy), y)?;
            let start = Instant::now();
            let acc = self
                .acc
                .entry((i, step, seed))
                .or_insert_with(|| StreamingCka::new(*dx, *dy, None));
            acc.update(xv, yv)?;
            self.update_seconds += start.elapsed().as_secs_f64();
            self.updates += 1;
        }
        Ok(())
    }
}

impl ProbeObserver for LiveCka {
    fn on_rows(
        &mut self,
        seed: u64,
        step: usize,
        tap: &str,
        offset: usize,
        rows: &[f32],
        width: usize,
    ) {
        if self.error.is_some() || !self.pairs.iter().any(|(a, b)| a == tap || b == tap) {
            return;
        }
        let key = (seed, step, offset);
        let entry = self.pending.entry(key).or_default();
        entry.insert(
            tap.to_string(),
            (rows.iter().map(|&v| v as f64).collect(), width),
        );
        // Update once every tap of every pair for this batch has arrived.
        let complete = self
            .pairs
            .iter()
            .all(|(a, b)| entry.contains_key(a) && entry.contains_key(b));
        if complete {
            if let Err(e) = self.update(key) {
                self.error = Some(e);
            }
            self.pending.remove(&key);
            let due = self
                .last_write
                .is_none_or(|t| t.elapsed().as_secs_f64() > 0.5);
            if due && let Err(e) = self.write() {
                self.error = Some(e);
            }
        }
    }

    fn on_seed_done(&mut self, seed: u64) {
        // Pairs naming a tap that was never produced leave batches pending: drop them.
        self.pending.retain(|k, _| k.0 != seed);
        if let Err(e) = self.write() {
            self.error.get_or_insert(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_accumulate_to_the_full_data_cka() {
        use flowlens_analysis::linear_cka;
        let n = 24;
        let x: Vec<f32> = (0..n * 3).map(|i| ((i * 37 % 11) as f32) - 5.0).collect();
        let y: Vec<f32> = (0..n * 2)
            .map(|i| ((i * 13 % 7) as f32) + 0.5 * (i % 3) as f32)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = flowlens_core::store::StorePaths::new(
            dir.path(),
            flowlens_core::store::StoreName::sample(),
        )
        .live_cka();
        let mut live = LiveCka::new(parse_pairs("a:b").unwrap(), path.clone(), false);
        for start in (0..n).step_by(8) {
            live.on_rows(0, 0, "a", start, &x[start * 3..(start + 8) * 3], 3);
            live.on_rows(0, 0, "other", start, &[0.0; 8], 1);
            live.on_rows(0, 0, "b", start, &y[start * 2..(start + 8) * 2], 2);
        }
        live.on_seed_done(0);
        let snapshot = live.snapshot();
        live.finish().unwrap();
        let xa =
            ndarray::Array2::from_shape_vec((n, 3), x.iter().map(|&v| v as f64).collect()).unwrap();
        let ya =
            ndarray::Array2::from_shape_vec((n, 2), y.iter().map(|&v| v as f64).collect()).unwrap();
        let biased = linear_cka(xa.view(), ya.view(), Estimator::Biased).unwrap();
        let debiased = linear_cka(xa.view(), ya.view(), Estimator::Debiased).unwrap();
        let step = &snapshot.pairs[0].steps[0];
        assert_eq!(step.n, 24);
        assert!((step.biased.unwrap() - biased).abs() < 1e-9);
        assert!((step.debiased.unwrap() - debiased).abs() < 1e-9);
        let on_disk = LiveCkaSnapshot::read(&path).unwrap();
        assert_eq!(on_disk.pairs[0].steps[0].n, 24);
        assert!(parse_pairs("enc.text").is_err());
    }

    /// Features that depend on the prompt only (as the text stream does), independent between
    /// the two taps: every seed repeats the same rows. Pooled over seeds, each prompt entered
    /// three times and the debiased CKA read about 0.8; per seed it is about 0 (sd ~0.06 at
    /// n = 24).
    #[test]
    fn seeds_are_not_pooled_so_repeated_prompts_do_not_inflate_the_debiased_cka() {
        let (n, d) = (24, 128);
        // splitmix64: uniform values in [-0.5, 0.5).
        let mut state = 7u64;
        let mut draw = |k: usize| -> Vec<f32> {
            (0..k)
                .map(|_| {
                    state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        };
        let (x, y) = (draw(n * d), draw(n * d));
        let dir = tempfile::tempdir().unwrap();
        let path = flowlens_core::store::StorePaths::new(
            dir.path(),
            flowlens_core::store::StoreName::sample(),
        )
        .live_cka();
        let mut live = LiveCka::new(parse_pairs("a:b").unwrap(), path, false);
        for seed in 0..3 {
            for start in (0..n).step_by(8) {
                live.on_rows(seed, 5, "a", start, &x[start * d..(start + 8) * d], d);
                live.on_rows(seed, 5, "b", start, &y[start * d..(start + 8) * d], d);
            }
            live.on_seed_done(seed);
        }
        let step = &live.snapshot().pairs[0].steps[0];
        assert_eq!(step.seeds.len(), 3);
        assert_eq!(step.n, 24, "rows per seed, not pooled");
        for s in &step.seeds {
            assert_eq!(s.n, 24);
            assert_eq!(
                s.debiased, step.seeds[0].debiased,
                "identical rows per seed"
            );
        }
        let v = step.debiased.unwrap();
        assert!(v.abs() < 0.25, "debiased CKA of independent features: {v}");
        assert_eq!(step.debiased_se, Some(0.0));
    }
}
