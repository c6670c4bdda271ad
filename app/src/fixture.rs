//! A synthetic runs folder in the run-directory format (docs/RUN_FORMAT.md), for the app's tests,
//! its frame-time benchmark and its documentation screenshots: training runs grouped like an
//! ablation, metrics with evaluations, sample grids, and a feature store whose taps share a
//! latent signal whose strength varies with layer and solver step (so the CKA grid has
//! structure). Deterministic: the same arguments write the same bytes. This is test data about
//! the app, never a result: real runs come from `flowlens train` / `flowlens sample`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flowlens_core::checkpoint::Weights;
use flowlens_core::flow::TapPooling;
use flowlens_core::store::{
    ProbeDtype, SeedRows, StoreHeader, StoreMode, StoreName, StorePaths, StoreWriter,
};
use serde_json::json;

/// Sizes of the fixture.
#[derive(Debug, Clone, Copy)]
pub struct FixtureSpec {
    /// Training runs (spread over the five variants and seeds).
    pub runs: usize,
    /// Training steps logged per run.
    pub steps: usize,
    /// LLM layers tapped (hidden states 0..layers).
    pub layers: usize,
    /// Solver steps in the feature store.
    pub solver_steps: usize,
    pub prompts: usize,
    pub width: usize,
    pub seeds: usize,
    /// Runs (the first ones) that get a feature store.
    pub runs_with_probes: usize,
}

impl FixtureSpec {
    /// Small: for interaction and snapshot tests.
    pub fn small() -> Self {
        Self {
            runs: 3,
            steps: 120,
            layers: 5,
            solver_steps: 8,
            prompts: 12,
            width: 16,
            seeds: 2,
            runs_with_probes: 2,
        }
    }

    /// The frame-time benchmark's: tens of runs and a full 23 x 30 grid.
    pub fn large() -> Self {
        Self {
            runs: 40,
            steps: 2000,
            layers: 23,
            solver_steps: 30,
            prompts: 64,
            width: 64,
            seeds: 2,
            runs_with_probes: 1,
        }
    }
}

const VARIANTS: [&str; 5] = ["baseline", "decoder-only", "encoder-only", "both", "uvit"];
const PROMPTS: [&str; 6] = [
    "a small red circle above a large blue square",
    "a large green triangle",
    "a small yellow square left of a small red circle",
    "a large blue circle",
    "a small purple triangle below a large orange square",
    "a large red square",
];

/// xorshift64*, enough for fixture noise.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-300), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(v)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn write_png(path: &Path, size: u32, seed: u64) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (r, g, b) = (
        (rng.next() * 255.0) as u8,
        (rng.next() * 255.0) as u8,
        (rng.next() * 255.0) as u8,
    );
    let cx = rng.next() * size as f64;
    let cy = rng.next() * size as f64;
    let rad = size as f64 * (0.15 + 0.2 * rng.next());
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
        if d < rad {
            image::Rgb([r, g, b])
        } else {
            image::Rgb([235, 235, 235])
        }
    });
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes the fixture under `root`; returns the run directories.
pub fn write(root: &Path, spec: FixtureSpec) -> Result<Vec<PathBuf>> {
    let exp = root.join("demo");
    std::fs::create_dir_all(&exp)?;
    std::fs::write(exp.join("experiment.toml"), "out = \"demo\"\n")?;
    let mut runs = Vec::new();
    for i in 0..spec.runs {
        let variant = VARIANTS[i % VARIANTS.len()];
        let seed = (i / VARIANTS.len()) as u64;
        let dir = exp
            .join("ablation")
            .join(variant)
            .join(format!("seed{seed}"));
        std::fs::create_dir_all(dir.join("samples"))?;
        let total = if i == spec.runs - 1 {
            spec.steps * 2
        } else {
            spec.steps
        };
        write_json(
            &dir.join("manifest.json"),
            &json!({"format_version": 1, "config_hash": format!("{:016x}", i), "git_revision": null,
                    "seeds": [seed], "crate_versions": {"flowlens-core": "0.1.0"}, "device": "cpu",
                    "command_line": ["flowlens", "train"], "created_unix": 1_700_000_000u64 + i as u64}),
        )?;
        write_json(
            &dir.join("config.json"),
            &json!({"preset": "tiny", "variant": variant, "steps": total, "batch_size": 16,
                    "lr": 0.001, "seed": seed, "stage1_steps": spec.steps / 4, "ema_decay": 0.99,
                    "prior": {"steps": 300}}),
        )?;
        let mut rng = Rng(0xABCD + i as u64);
        let mut lines = String::new();
        for step in 0..spec.steps {
            let loss = 0.2
                + 0.8 * (-(step as f64) / (spec.steps as f64 / 6.0)).exp()
                + 0.03 * rng.normal();
            lines.push_str(&format!(
                "{{\"step\":{step},\"loss\":{loss},\"lr\":0.001,\"grad_norm\":{},\"samples_per_s\":{},\"stage\":{}}}\n",
                1.0 + 0.2 * rng.next(),
                20.0 + rng.next(),
                if step <= spec.steps / 4 { 1 } else { 2 }
            ));
            if step % (spec.steps / 3).max(1) == 0 {
                let a = 0.1 + 0.5 * step as f64 / spec.steps as f64 * (1.0 + i as f64 * 0.05);
                lines.push_str(&format!(
                    "{{\"event\":\"eval\",\"step\":{step},\"adherence\":{{\"overall\":{a},\"colour\":{}}},\"seconds\":3.0}}\n",
                    (a * 1.3).min(1.0)
                ));
            }
        }
        std::fs::write(dir.join("metrics.jsonl"), lines)?;
        write_png(
            &dir.join("samples")
                .join(format!("grid-step{:08}.png", spec.steps)),
            64,
            i as u64,
        )?;
        if i < spec.runs_with_probes {
            write_store(&dir, spec, i as u64)?;
        }
        runs.push(dir);
    }
    if spec.runs_with_probes >= 2 {
        write_exp1(&exp, &runs[1], &runs[0], spec)?;
    }
    Ok(runs)
}

/// `demo/exp1/results.json`: experiment 1 computed by its own analysis on two fixture stores
/// (the second run as "ours", the first as the baseline), for the Results tab.
fn write_exp1(exp: &Path, ours: &Path, baseline: &Path, spec: FixtureSpec) -> Result<()> {
    use flowlens_core::store::FeatureStore;
    use flowlens_experiments::exp1::analyse::analyse;
    use flowlens_experiments::exp1::config::Exp1;
    let open = |run: &Path| FeatureStore::open(run, &StoreName::sample());
    let mut config = Exp1 {
        ours: "decoder-only".into(),
        layers: vec![0, 1, spec.layers / 2, spec.layers - 1],
        steps: vec![1, spec.solver_steps - 2],
        permutations: 49,
        bootstrap: 50,
        ..Exp1::default()
    };
    config.probing.seeds = (0..spec.seeds as u64).collect();
    config.probing.solver_steps = spec.solver_steps;
    let results = analyse(&open(ours)?, &open(baseline)?, &config, None)?;
    flowlens_experiments::io::write_json(&exp.join("exp1/results.json"), &results)
}

fn write_store(run: &Path, spec: FixtureSpec, salt: u64) -> Result<()> {
    let paths = StorePaths::new(run, StoreName::sample());
    let prompts: Vec<String> = (0..spec.prompts)
        .map(|i| format!("{} #{i}", PROMPTS[i % PROMPTS.len()]))
        .collect();
    let mut names = vec!["enc.text".to_string(), "enc.noise".to_string()];
    for l in 0..spec.layers {
        names.push(format!("llm.h{l:02}.text"));
        names.push(format!("llm.h{l:02}.image"));
    }
    let mut store = StoreWriter::new(
        paths.clone(),
        StoreHeader {
            mode: StoreMode::Sampler,
            prompts,
            times: (0..spec.solver_steps)
                .map(|s| s as f32 / spec.solver_steps as f32)
                .collect(),
            cfg: 2.0,
            pooling: TapPooling::Mean,
            dtype: ProbeDtype::F32,
            checkpoint_step: spec.steps,
            weights: Weights::Ema,
            tap_steps: None,
        },
    );
    let rank = 4;
    for seed in 0..spec.seeds as u64 {
        let mut rng = Rng(0x1234 + salt * 977 + seed * 31);
        // The shared signal: one [prompts, rank] latent per seed.
        let z: Vec<f64> = (0..spec.prompts * rank).map(|_| rng.normal()).collect();
        let mut rows = SeedRows::new(seed, spec.prompts);
        for s in 0..spec.solver_steps {
            let t = s as f64 / spec.solver_steps as f64;
            for (k, name) in names.iter().enumerate() {
                let layer = name
                    .strip_prefix("llm.h")
                    .and_then(|r| r.split('.').next())
                    .and_then(|x| x.parse::<f64>().ok());
                // Signal strength: encoder streams grow with t; LLM layers peak mid-depth.
                let strength = match layer {
                    Some(l) => {
                        let mid = (spec.layers as f64 - 1.0) / 2.0;
                        1.5 * (-(l - mid).powi(2) / (2.0 * (mid.max(1.0) * 0.6).powi(2))).exp()
                            * (0.3 + t)
                    }
                    None => 0.4 + 1.6 * t,
                };
                let mut prng = Rng(0x5151 + k as u64 * 7919 + salt);
                let proj: Vec<f64> = (0..rank * spec.width).map(|_| prng.normal()).collect();
                let mut x = vec![0f32; spec.prompts * spec.width];
                for i in 0..spec.prompts {
                    for j in 0..spec.width {
                        let sig: f64 = (0..rank)
                            .map(|r| z[i * rank + r] * proj[r * spec.width + j])
                            .sum();
                        x[i * spec.width + j] = (strength * sig + rng.normal()) as f32;
                    }
                }
                rows.add(name, s, 0, &x, spec.width);
            }
        }
        store.write_seed(rows)?;
        for i in 0..spec.prompts {
            write_png(
                &paths.sample_png(seed, i),
                32,
                salt * 1000 + seed * 100 + i as u64,
            )?;
        }
        for s in 0..spec.solver_steps {
            write_png(&paths.preview_png(seed, 0, s), 32, 7 + s as u64)?;
        }
    }
    Ok(())
}
