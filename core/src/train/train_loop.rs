//! The training loop: steps to `config.steps`, appending a metrics record per step, evaluating
//! and writing sample grids on schedule, and checkpointing every `checkpoint_every` steps, after
//! each evaluation and at the end.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::backend::AutodiffBackend;

use crate::checkpoint::{Best, BestMetric};
use crate::run::{Event, StepRecord};
use crate::train::error::TrainError;
use crate::train::hooks;
use crate::train::trainer::Trainer;

/// What the training loop reports besides steps.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Step(StepRecord),
    /// An evaluation finished: step, mean adherence and its chance level.
    Eval(usize, f64, f64),
    /// A sample grid was written.
    Samples(usize, PathBuf),
    Checkpoint(usize),
}

/// Trains to `config.steps`; `on_event` sees each record (progress display).
pub fn train<B: AutodiffBackend>(
    trainer: &mut Trainer<B>,
    mut on_event: impl FnMut(&TrainEvent),
) -> Result<(), TrainError> {
    let mut metrics = trainer.run.metrics_writer()?;
    if trainer.step > 0 {
        metrics.record(Event::Resume {
            from_step: trainer.step,
        })?;
    }
    let due = |every: usize, step: usize| every > 0 && step.is_multiple_of(every);
    while trainer.step < trainer.config.steps {
        let record = trainer.train_step()?;
        metrics.record(record)?;
        on_event(&TrainEvent::Step(record));
        let step = trainer.step;
        let last = step == trainer.config.steps;
        let mut score = None;
        if due(trainer.config.eval_every, step) || (last && trainer.config.eval_every > 0) {
            let started = Instant::now();
            if let Some(eval) = hooks::evaluate(trainer)? {
                let overall = (eval.adherence.overall, eval.chance.overall);
                metrics.record(Event::Eval {
                    step,
                    adherence: eval.adherence,
                    chance: eval.chance,
                    margin: Some(eval.margin),
                    seconds: started.elapsed().as_secs_f64(),
                })?;
                on_event(&TrainEvent::Eval(step, overall.0, overall.1));
                score = Some(Best {
                    step,
                    metric: BestMetric::Adherence,
                    value: overall.0,
                });
            }
        }
        if due(trainer.config.sample_every, step) || (last && trainer.config.sample_every > 0) {
            let path = hooks::sample_grid(trainer)?;
            metrics.record(Event::Samples {
                step,
                path: path.clone(),
            })?;
            on_event(&TrainEvent::Samples(step, path));
        }
        if score.is_some() || due(trainer.config.checkpoint_every, step) || last {
            if score.is_none() && !trainer.window.is_empty() {
                let mean = trainer.window.iter().map(|&v| v as f64).sum::<f64>()
                    / trainer.window.len() as f64;
                score = Some(Best {
                    step,
                    metric: BestMetric::Loss,
                    value: mean,
                });
            }
            trainer.window.clear();
            metrics.sync()?;
            trainer.save_checkpoint(score)?;
            on_event(&TrainEvent::Checkpoint(step));
        }
    }
    Ok(())
}
