//! Running experiment 2: the ConvNeXt-decoder system trained around the frozen dual-stream
//! encoder of `ours` (checked bit-identical), both systems sampled into `probes-exp2`, the curves
//! analysed into `out/exp2/results.json`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use flowlens_core::checkpoint::{self, CheckpointChoice};
use flowlens_core::flow::Variant;
use flowlens_core::run::RunDir;
use flowlens_core::train::{LlmInit, TrainConfig, Transfer};

use crate::exp2::analyse::{Results, analyse};
use crate::io::write_json;
use crate::pipeline::{Log, ensure_sampled, ensure_trained, require_trained};
use crate::protocol::ExperimentFile;
use crate::training::TrainDevices;

/// The exp2 ConvNeXt-decoder system's run directory.
pub fn exp2_run(file: &ExperimentFile, seed: u64) -> PathBuf {
    file.out
        .join("exp2")
        .join("convnext-decoder")
        .join(format!("seed{seed}"))
}

/// Experiment 2: trains the ConvNeXt-decoder system around the frozen dual-stream encoder of
/// `ours`, samples both, writes `out/exp2/results.json`.
pub fn run<B: Backend>(
    file: &ExperimentFile,
    devices: &TrainDevices<B>,
    log: &Log,
) -> Result<Results> {
    let device = &devices.first;
    let c = &file.exp2;
    let run_seed = c.probing.run_seed.unwrap_or(file.ablation.seeds[0]);
    let ours = file.resolve_run(&c.ours, Some(run_seed));
    require_trained(&ours, "exp2's `ours`")?;
    let source: TrainConfig = RunDir::open(&ours)?.config()?;
    if source.variant != Variant::Both {
        bail!(
            "exp2's `ours` ({}) is a {} run; experiment 2 takes the dual-stream encoder of a `both` run (dual-stream encoder + single-stream decoder)",
            ours.display(),
            source.variant.name()
        );
    }
    // The same data and budget as the source, with the ConvNeXt decoder and the source's
    // encoder, time embedding and LLM copied in; encoder, time embedding and token embeddings
    // frozen.
    // A system trained before keeps the transfer step it was trained from: `ours` may have been
    // trained on since.
    let dir = exp2_run(file, run_seed);
    let transfer_step = match RunDir::open(&dir).and_then(|r| r.config::<TrainConfig>()) {
        Ok(TrainConfig {
            transfer: Some(t), ..
        }) if t.from == ours => t.step,
        _ => checkpoint::latest_step(&ours),
    };
    let mut config = TrainConfig {
        variant: Variant::EncoderOnly,
        llm_init: LlmInit::Random,
        transfer: Some(Transfer {
            from: ours.clone(),
            step: transfer_step,
        }),
        ..source.clone()
    };
    if let Some(steps) = c.steps {
        config.steps = steps;
    }
    ensure_trained::<B>(
        config,
        &dir,
        &format!(
            "exp2 ConvNeXt decoder around the encoder of {}",
            ours.display()
        ),
        devices,
        log,
    )?;
    let identical = flowlens_core::train::transfer::check_frozen_identical::<B>(
        &ours, &dir, device,
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "the encoder of {} is not bit-identical to its source {}: {e}",
            dir.display(),
            ours.display()
        )
    })?;
    log.say(format!(
        "exp2: the two systems share {identical} encoder tensors, bit for bit"
    ));
    let taps = vec!["enc.text".to_string(), "enc.noise".to_string()];
    let mut stores = Vec::new();
    // `ours` is sampled at the transfer step, whose encoder was checked identical (its latest
    // checkpoint may have been trained further); the ConvNeXt-decoder system at its latest.
    let at = [
        CheckpointChoice::Step(transfer_step),
        CheckpointChoice::Latest,
    ];
    for (run, checkpoint) in [&ours, &dir].into_iter().zip(at) {
        stores.push(ensure_sampled::<B>(
            run,
            checkpoint,
            "probes-exp2",
            &c.probing,
            &taps,
            None,
            c.pooling,
            device,
            log,
        )?);
    }
    log.say("experiment 2: text-noise CKA at every solver step");
    let results = analyse(
        &[
            ("single-stream decoder", &stores[0]),
            ("ConvNeXt decoder", &stores[1]),
        ],
        c,
        identical,
    )?;
    write_json(&file.out.join("exp2/results.json"), &results)?;
    Ok(results)
}
