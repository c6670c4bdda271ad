//! Running the ablation: every variant and training seed trained on identical data and budget
//! (each run reused when finished, continued when interrupted), then summarised into
//! `out/ablation/results.json`.

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use flowlens_core::flow::Variant;
use flowlens_core::train::TrainConfig;

use crate::ablation::analyse::{Results, summarise_run};
use crate::io::{read_json, write_json};
use crate::pipeline::{Log, ensure_trained_evaluated};
use crate::protocol::ExperimentFile;
use crate::training::TrainDevices;
use std::path::Path;

/// The training configuration of one ablation run: the preset's defaults, the file's
/// `[ablation.train]` overrides, then the budget, evaluation schedule and seed.
pub fn ablation_config(file: &ExperimentFile, variant: Variant, seed: u64) -> Result<TrainConfig> {
    let a = &file.ablation;
    let mut value = serde_json::to_value(TrainConfig::for_preset(a.preset, variant))?;
    crate::training::merge(
        &mut value,
        &crate::io::toml_to_json(&toml::Value::Table(a.train.clone()))
            .context("[ablation.train]")?,
    );
    let mut config: TrainConfig = crate::io::from_json_named(value).context("[ablation.train]")?;
    config.preset = a.preset;
    config.variant = variant;
    config.steps = a.steps;
    config.eval_every = a.eval_every;
    config.seed = seed;
    Ok(config)
}

/// The training-time MJHQ evaluation of `[ablation.mjhq]`, if configured.
pub fn ablation_mjhq(file: &ExperimentFile) -> Option<crate::eval::TrainingEval> {
    let a = &file.ablation;
    let m = a.mjhq.as_ref()?;
    Some(crate::eval::TrainingEval {
        every: a.eval_every,
        args: crate::eval::EvalArgs::for_training(
            m.benchmark.clone(),
            m.n,
            m.seeds.clone(),
            m.clip.clone(),
            &m.inception,
            m.solver_steps,
        ),
    })
}

/// Runs and summarises the ablation; writes `out/ablation/results.json`.
pub fn run<B: Backend>(
    file: &ExperimentFile,
    devices: &TrainDevices<B>,
    log: &Log,
) -> Result<Results> {
    let a = &file.ablation;
    let mjhq = ablation_mjhq(file);
    let mut runs = Vec::new();
    for &seed in &a.seeds {
        for &variant in &a.variants {
            let dir = file.ablation_run(variant, seed);
            let config = ablation_config(file, variant, seed)?;
            ensure_trained_evaluated::<B>(
                config,
                &dir,
                &format!("ablation {} seed {seed}", variant.name()),
                devices,
                log,
                mjhq.as_ref(),
            )?;
        }
    }
    for &variant in &a.variants {
        for &seed in &a.seeds {
            runs.push(summarise_run(
                variant.name(),
                seed,
                &file.ablation_run(variant, seed),
                100,
            )?);
        }
    }
    let results = Results {
        format: "flowlens.ablation.v1".into(),
        preset: a.preset,
        steps: a.steps,
        eval_every: a.eval_every,
        variants: a.variants.iter().map(|v| v.name().to_string()).collect(),
        seeds: a.seeds.clone(),
        runs,
    };
    write_json(&file.out.join("ablation/results.json"), &results)?;
    Ok(results)
}

/// Reads the ablation's results back (for the report and the tests).
pub fn load(out: &Path) -> Result<Results> {
    read_json(&out.join("ablation/results.json"))
}
