//! A training run's state on disk: writing a checkpoint (model, EMA weights, both optimisers and
//! the step, into `checkpoints/step-N.partial`, then renamed), recording the best one, pruning
//! old ones, and loading the newest to resume.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use serde_json::json;

use crate::checkpoint::{self, Best};
use crate::train::error::TrainError;
use crate::train::grads::adamw;
use crate::train::prepare::Prepare;
use crate::train::trainer::Trainer;

fn ckpt_err(path: &Path) -> impl Fn(String) -> TrainError + '_ {
    move |reason| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Writes model, EMA(s), both optimizers and the step into `checkpoints/step-N.partial`,
    /// syncs, and renames it to `checkpoints/step-N`; records it as the best when `score` beats
    /// the best so far; then drops all but the newest `keep_last` (and the best).
    pub fn save_checkpoint(&mut self, score: Option<Best>) -> Result<PathBuf, TrainError> {
        let done = checkpoint::step_dir(self.run.root(), self.step);
        let tmp = done.with_extension("partial");
        // A failed write (a full disk) leaves nothing behind: a partial folder would keep the
        // disk full, and the previous checkpoints stay the ones to resume from.
        self.write_checkpoint(&tmp, &done)?;
        if let Some(score) = score
            && self.config.keep_best
            && self.best.as_ref().is_none_or(|b| score.beats(b))
        {
            let path = self.run.path(checkpoint::DIR).join(checkpoint::BEST);
            crate::fsutil::write_atomic(&path, json!(score).to_string().as_bytes())
                .map_err(|e| ckpt_err(&path)(e.to_string()))?;
            self.best = Some(score);
        }
        let keep_step = self.best.as_ref().map(|b| b.step);
        let all: Vec<_> = checkpoint::list(self.run.root())
            .into_iter()
            .filter(|(s, _)| Some(*s) != keep_step)
            .collect();
        for (_, old) in all
            .iter()
            .take(all.len().saturating_sub(self.config.keep_last.max(1)))
        {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(done)
    }

    /// Writes every record into `tmp`, syncs, and renames it to `done`; a failure removes `tmp`.
    fn write_checkpoint(&self, tmp: &Path, done: &Path) -> Result<(), TrainError> {
        let err = ckpt_err(tmp);
        let rec = checkpoint::recorder();
        let failed = |e: burn::record::RecorderError| match e {
            burn::record::RecorderError::Unknown(m) => err(m),
            other => err(other.to_string()),
        };
        crate::fsutil::build_dir(
            tmp,
            done,
            |tmp| {
                rec.record(
                    self.model.clone().into_record(),
                    tmp.join(checkpoint::MODEL),
                )
                .map_err(failed)?;
                rec.record(self.ema.clone().into_record(), tmp.join(checkpoint::EMA))
                    .map_err(failed)?;
                if let Some(ema2) = &self.ema2 {
                    rec.record(ema2.clone().into_record(), tmp.join(checkpoint::EMA2))
                        .map_err(failed)?;
                }
                rec.record(
                    self.optim_heads.to_record(),
                    tmp.join(checkpoint::OPTIM_HEADS),
                )
                .map_err(failed)?;
                rec.record(self.optim_llm.to_record(), tmp.join(checkpoint::OPTIM_LLM))
                    .map_err(failed)?;
                crate::fsutil::write_atomic(
                    &tmp.join(checkpoint::STATE),
                    json!({"step": self.step, "best": self.best})
                        .to_string()
                        .as_bytes(),
                )
                .map_err(|e| err(e.to_string()))
            },
            |e| err(e.to_string()),
        )
    }

    /// Continues from the newest complete checkpoint that loads; a damaged newer one is
    /// skipped with a [`Prepare::FellBack`] report (and kept on disk for inspection).
    pub(crate) fn load_latest(
        &mut self,
        progress: &mut dyn FnMut(Prepare),
    ) -> Result<(), TrainError> {
        let all = checkpoint::list(self.run.root());
        let Some(newest) = all.last().map(|c| c.1.clone()) else {
            return Ok(()); // killed before the first checkpoint: start over
        };
        let mut first_error: Option<TrainError> = None;
        for (step, dir) in all.into_iter().rev() {
            match self.load_checkpoint(step, &dir) {
                Ok(()) => {
                    if let Some(e) = first_error {
                        progress(Prepare::FellBack {
                            skipped: newest,
                            reason: e.to_string(),
                            from_step: step,
                        });
                    }
                    return Ok(());
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(TrainError::NoLoadableCheckpoint {
            newest,
            error: Box::new(first_error.expect("at least one checkpoint was tried")),
        })
    }

    /// Loads every record of one checkpoint, or fails naming the file that does not load.
    fn load_checkpoint(&mut self, step: usize, dir: &Path) -> Result<(), TrainError> {
        let rec = checkpoint::recorder();
        let ema = rec
            .load(dir.join(checkpoint::EMA), &self.device)
            .map_err(load_err(dir, checkpoint::EMA))?;
        let ema2 = match &self.ema2 {
            Some(_) => Some(
                rec.load(dir.join(checkpoint::EMA2), &self.device)
                    .map_err(load_err(dir, checkpoint::EMA2))?,
            ),
            None => None,
        };
        let (model, heads, llm) = load_state(self.model.clone(), dir, &self.device)?;
        let state_path = dir.join(checkpoint::STATE);
        let state: serde_json::Value = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ckpt_err(&state_path)("missing or unreadable".into()))?;
        // Everything loaded: only now replace the trainer's state.
        self.model = model;
        self.ema = self.ema.clone().load_record(ema);
        if let (Some(e), Some(record)) = (self.ema2.take(), ema2) {
            self.ema2 = Some(e.load_record(record));
        }
        self.optim_heads = heads;
        self.optim_llm = llm;
        self.best = serde_json::from_value(state["best"].clone()).unwrap_or(None);
        self.step = step;
        Ok(())
    }
}

fn load_err<'a>(
    dir: &'a Path,
    name: &'a str,
) -> impl Fn(burn::record::RecorderError) -> TrainError + 'a {
    let path = dir.join(name).with_extension("mpk");
    move |e| TrainError::Checkpoint {
        path: path.clone(),
        reason: format!(
            "does not load ({e}); the file is damaged or was written by another version"
        ),
    }
}

/// A model with the optimisers of its heads and of its LLM.
pub(crate) type TrainingState<B> = (
    crate::flow::FlowModel<B>,
    crate::train::grads::Optim<B>,
    crate::train::grads::Optim<B>,
);

/// The training weights and both optimisers of the checkpoint in `dir`, loaded into `model`
/// (built as the run builds it): what a resumed run and the other nodes of a multi-node run
/// continue from.
pub(crate) fn load_state<B: AutodiffBackend>(
    model: crate::flow::FlowModel<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<TrainingState<B>, TrainError> {
    let rec = checkpoint::recorder();
    let record = rec
        .load(dir.join(checkpoint::MODEL), device)
        .map_err(load_err(dir, checkpoint::MODEL))?;
    let heads = rec
        .load(dir.join(checkpoint::OPTIM_HEADS), device)
        .map_err(load_err(dir, checkpoint::OPTIM_HEADS))?;
    let llm = rec
        .load(dir.join(checkpoint::OPTIM_LLM), device)
        .map_err(load_err(dir, checkpoint::OPTIM_LLM))?;
    Ok((
        model.load_record(record),
        adamw::<B>().load_record(heads),
        adamw::<B>().load_record(llm),
    ))
}
