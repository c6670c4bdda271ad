//! Training a run with progress display: bars for the preparation (latent cache, stage-0 prior)
//! and the steps, evaluation messages, and the MJHQ evaluation on schedule. Shared by
//! `flowlens train` and the experiment protocols.

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use flowlens_core::train::nodes::NodeSpec;
use flowlens_core::train::parallel::Parallel;
use flowlens_core::train::parallel::follow::follow;
use flowlens_core::train::{Prepare, TrainConfig, TrainEvent, Trainer, train};

/// Deep merge: tables merge key by key, everything else is replaced.
pub fn merge(into: &mut serde_json::Value, from: &serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    // A data source of another kind replaces the table whole.
                    Some(slot) if !(k == "data" && slot.get("kind") != v.get("kind")) => {
                        merge(slot, v)
                    }
                    _ => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The devices a run trains on: the first (evaluation and sampling run there too) and, for
/// data-parallel training, the others, each with a replica (`flowlens train --devices`).
pub struct TrainDevices<B: Backend> {
    pub first: B::Device,
    pub others: Vec<B::Device>,
    /// Every device's name as the user gave it, the first one's first.
    pub labels: Vec<String>,
    /// Compare every replica with the first device's after every that many steps (0: only at
    /// the start).
    pub check_every: usize,
    /// This process's place among several nodes (`--nnodes`, or torchrun's and SLURM's
    /// environment).
    pub node: Option<NodeSpec>,
    /// Named with `--devices` (even one): the data-parallel path runs, its exchange included.
    pub explicit: bool,
}

impl<B: Backend> TrainDevices<B> {
    /// One device.
    pub fn one(device: B::Device) -> Self {
        Self {
            labels: vec![format!("{device:?}")],
            first: device,
            others: Vec::new(),
            check_every: 0,
            node: None,
            explicit: false,
        }
    }

    /// Several devices of one backend, the first one first.
    pub fn of(devices: Vec<B::Device>, labels: Vec<String>, check_every: usize) -> Self {
        let mut devices = devices.into_iter();
        Self {
            first: devices.next().expect("a device list is never empty"),
            others: devices.collect(),
            labels,
            check_every,
            node: None,
            explicit: true,
        }
    }
}

/// Trains `config` into `run` (continuing it with `resume`) with progress bars (`label` prefixes
/// them) for the preparation and the steps, and runs the MJHQ evaluation on schedule when
/// `mjhq` is given; an evaluation that fails is reported and training goes on. With several
/// `devices` the run trains data-parallel (one replica per device, the same items and steps as
/// on one device).
pub fn train_with_evaluation<B: Backend>(
    config: TrainConfig,
    run: &std::path::Path,
    resume: bool,
    devices: &TrainDevices<B>,
    show: bool,
    label: &str,
    mjhq: Option<&crate::eval::TrainingEval>,
) -> Result<()> {
    let device = devices.first.clone();
    let nnodes = devices.node.as_ref().map_or(1, |n| n.nnodes);
    let n = devices.labels.len().max(1) * nnodes;
    if !config.batch_size.is_multiple_of(n) {
        bail!(
            "the batch size {} is not a multiple of the {n} devices ({}{}): each device computes \
             batch_size / devices rows of every micro-batch; choose a batch size divisible by {n}",
            config.batch_size,
            devices.labels.join(", "),
            if nnodes > 1 {
                format!(" on each of {nnodes} nodes")
            } else {
                String::new()
            }
        );
    }
    if let Some(m) = mjhq
        && (m.every == 0 || !m.every.is_multiple_of(config.checkpoint_every))
    {
        bail!(
            "--mjhq-every {} must be a positive multiple of checkpoint_every ({}): the evaluation reads the checkpoint of its step",
            m.every,
            config.checkpoint_every
        );
    }
    if let Some(spec) = devices.node.as_ref().filter(|n| n.node_rank > 0) {
        // Another node: follows node 0, writes nothing.
        if show {
            eprintln!(
                "node {} of {}: joining node 0 at {} with {} device(s) ({})",
                spec.node_rank,
                spec.nnodes,
                spec.rendezvous,
                devices.labels.len(),
                devices.labels.join(", ")
            );
        }
        let all: Vec<B::Device> = std::iter::once(device)
            .chain(devices.others.iter().cloned())
            .collect();
        follow::<Autodiff<B>>(
            config,
            run,
            all,
            devices.labels.clone(),
            devices.check_every,
            spec,
            &mut |_| {},
        )?;
        if show {
            eprintln!(
                "node {}: training finished (node 0 wrote the run)",
                spec.node_rank
            );
        }
        return Ok(());
    }
    let eval_device = device.clone();
    {
        let prep = crate::io::progress_bar(0, show);
        let mut phase = "";
        let mut on_prepare = |p: Prepare| {
            let (label, done, total, msg) = match p {
                Prepare::Latents(d, t) => {
                    ("encoding data into the latent cache", d, t, String::new())
                }
                Prepare::Prior(s, n, l) => (
                    "stage 0: training the language-model prior",
                    s,
                    n,
                    format!("next-token loss {l:.3}"),
                ),
                Prepare::FellBack {
                    skipped,
                    reason,
                    from_step,
                } => {
                    // Said even with --quiet: the run continues from an older state.
                    prep.suspend(|| {
                        eprintln!(
                            "warning: {} does not load ({reason}); resuming from the checkpoint of step {from_step} instead",
                            skipped.display()
                        )
                    });
                    return;
                }
            };
            if phase != label {
                phase = label;
                prep.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {prefix} {wide_bar} {pos}/{len} {msg}",
                    )
                    .expect("valid template"),
                );
                prep.set_prefix(label);
                prep.set_length(total as u64);
            }
            prep.set_position(done as u64);
            prep.set_message(msg);
        };
        let mut trainer =
            Trainer::<Autodiff<B>>::prepare(config, run, resume, device, &mut on_prepare)?;
        prep.finish_and_clear();
        if !devices.others.is_empty() || devices.node.is_some() || devices.explicit {
            if show && let Some(spec) = &devices.node {
                eprintln!(
                    "node 0 of {}: waiting at {} for the other nodes",
                    spec.nnodes, spec.rendezvous
                );
            }
            Parallel::start(
                &mut trainer,
                devices.others.clone(),
                devices.labels.clone(),
                devices.check_every,
                devices.node.clone(),
            )?;
            if show {
                eprintln!(
                    "data-parallel training on {n} devices ({}{}): batch {} = {} rows per device",
                    devices.labels.join(", "),
                    if nnodes > 1 {
                        format!(" on each of {nnodes} nodes")
                    } else {
                        String::new()
                    },
                    trainer.config.batch_size,
                    trainer.config.batch_size / n
                );
            }
        }
        let total = trainer.config.steps as u64;
        let bar = crate::io::progress_bar(total, show);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {prefix}{wide_bar} {pos}/{len} steps, ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        if !label.is_empty() {
            bar.set_prefix(format!("{label} "));
        }
        bar.set_position(trainer.step as u64);
        let mut last_eval = String::new();
        let result = train(&mut trainer, |e| match e {
            TrainEvent::Step(r) => {
                bar.set_position(r.step as u64 + 1);
                bar.set_message(format!(
                    "loss {:.4} lr {:.2e} {:.1} samples/s stage {}{last_eval}",
                    r.loss, r.lr, r.samples_per_s, r.stage
                ));
            }
            TrainEvent::Eval(step, v, chance) => {
                last_eval = format!(" | adherence {v:.3} @{step}");
                bar.println(format!(
                    "step {step}: oracle prompt adherence {v:.3} (chance {chance:.3})"
                ));
            }
            TrainEvent::Samples(step, path) => {
                bar.println(format!("step {step}: samples in {}", path.display()));
            }
            TrainEvent::Checkpoint(step) => {
                let Some(m) = mjhq else { return };
                if !m.due(*step, *step == total as usize) {
                    return;
                }
                let message = match m.evaluate::<B>(run, *step, &eval_device) {
                    Ok(r) => format!(
                        "step {step}: MJHQ FID {:.3}, CLIP score {:.3} (n = {})",
                        r.fid.mean, r.clip_score.mean, r.n
                    ),
                    Err(e) => format!("step {step}: MJHQ evaluation failed: {e:#}"),
                };
                if show {
                    bar.println(message);
                } else if message.contains("failed") {
                    eprintln!("{message}");
                }
            }
        });
        bar.finish_and_clear();
        result?;
        if show {
            eprintln!(
                "trained {} steps; run in {}",
                trainer.step,
                trainer.run_dir().root().display()
            );
        }
        Ok(())
    }
}
