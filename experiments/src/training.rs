//! Training a run with progress display: bars for the preparation (latent cache, stage-0 prior)
//! and the steps, evaluation messages, and the MJHQ evaluation on schedule. Shared by
//! `flowlens train` and the experiment protocols.

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
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

/// Trains `config` into `run` (continuing it with `resume`) with progress bars (`label` prefixes
/// them) for the preparation and the steps, and runs the MJHQ evaluation on schedule when
/// `mjhq` is given; an evaluation that fails is reported and training goes on.
pub fn train_with_evaluation<B: Backend>(
    config: TrainConfig,
    run: &std::path::Path,
    resume: bool,
    device: B::Device,
    show: bool,
    label: &str,
    mjhq: Option<&crate::eval::TrainingEval>,
) -> Result<()> {
    if let Some(m) = mjhq
        && (m.every == 0 || !m.every.is_multiple_of(config.checkpoint_every))
    {
        bail!(
            "--mjhq-every {} must be a positive multiple of checkpoint_every ({}): the evaluation reads the checkpoint of its step",
            m.every,
            config.checkpoint_every
        );
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
