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
        let err = ckpt_err(&tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| err(e.to_string()))?;
        let rec = checkpoint::recorder();
        rec.record(
            self.model.clone().into_record(),
            tmp.join(checkpoint::MODEL),
        )
        .map_err(|e| err(e.to_string()))?;
        rec.record(self.ema.clone().into_record(), tmp.join(checkpoint::EMA))
            .map_err(|e| err(e.to_string()))?;
        if let Some(ema2) = &self.ema2 {
            rec.record(ema2.clone().into_record(), tmp.join(checkpoint::EMA2))
                .map_err(|e| err(e.to_string()))?;
        }
        rec.record(
            self.optim_heads.to_record(),
            tmp.join(checkpoint::OPTIM_HEADS),
        )
        .map_err(|e| err(e.to_string()))?;
        rec.record(self.optim_llm.to_record(), tmp.join(checkpoint::OPTIM_LLM))
            .map_err(|e| err(e.to_string()))?;
        crate::fsutil::write_atomic(
            &tmp.join(checkpoint::STATE),
            json!({"step": self.step, "best": self.best})
                .to_string()
                .as_bytes(),
        )
        .map_err(|e| err(e.to_string()))?;
        crate::fsutil::sync_dir(&tmp).map_err(|e| err(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&done);
        std::fs::rename(&tmp, &done).map_err(|e| err(e.to_string()))?;
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

    /// Continues from the newest complete checkpoint (none yet: the run starts over).
    pub(crate) fn load_latest(&mut self) -> Result<(), TrainError> {
        let Some((step, dir)) = checkpoint::list(self.run.root()).pop() else {
            return Ok(()); // killed before the first checkpoint: start over
        };
        let err = ckpt_err(&dir);
        let rec = checkpoint::recorder();
        let model = rec
            .load(dir.join(checkpoint::MODEL), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.model = self.model.clone().load_record(model);
        let ema = rec
            .load(dir.join(checkpoint::EMA), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.ema = self.ema.clone().load_record(ema);
        if let Some(ema2) = self.ema2.take() {
            let record = rec
                .load(dir.join(checkpoint::EMA2), &self.device)
                .map_err(|e| err(e.to_string()))?;
            self.ema2 = Some(ema2.load_record(record));
        }
        let heads = rec
            .load(dir.join(checkpoint::OPTIM_HEADS), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.optim_heads = adamw::<B>().load_record(heads);
        let llm = rec
            .load(dir.join(checkpoint::OPTIM_LLM), &self.device)
            .map_err(|e| err(e.to_string()))?;
        self.optim_llm = adamw::<B>().load_record(llm);
        let state_path = dir.join(checkpoint::STATE);
        let state: serde_json::Value = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ckpt_err(&state_path)("missing or unreadable".into()))?;
        self.best = serde_json::from_value(state["best"].clone()).unwrap_or(None);
        self.step = step;
        Ok(())
    }
}
