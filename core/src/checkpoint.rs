//! Checkpoints of a run (docs/RUN_FORMAT.md): `checkpoints/step-NNNNNNNN/` folders (written as
//! `.partial`, then renamed), `checkpoints/best.json`, and loading one checkpoint's weights for
//! sampling. Listing needs no backend: it reads folder names.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder, RecorderError};
use burn::tensor::backend::Backend;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::flow::{FlowConfig, FlowModel};
use crate::run::{RunDir, RunError};
use crate::tokenizer::{LlamaTokenizer, TokenizerError};
use crate::train::config::TrainConfig;

/// The folder of a run's checkpoints.
pub const DIR: &str = "checkpoints";
/// The record of the best checkpoint, in [`DIR`].
pub const BEST: &str = "best.json";
/// The files of one checkpoint folder (burn records without their `.mpk` extension).
pub const MODEL: &str = "model";
pub const EMA: &str = "ema";
pub const EMA2: &str = "ema2";
pub const OPTIM_HEADS: &str = "optim_heads";
pub const OPTIM_LLM: &str = "optim_llm";
/// `{"step", "best"}` of a checkpoint.
pub const STATE: &str = "state.json";

/// The recorder of every checkpoint file (named MessagePack, full precision).
pub fn recorder() -> CheckedMpkRecorder {
    CheckedMpkRecorder
}

/// burn's named-MessagePack file format (`NAME.mpk`, full precision; the files load with
/// `NamedMpkFileRecorder`), written so that an I/O failure is reported as itself: the first
/// error of any write, the final flush and the fsync (`No space left on device (os error 28)`),
/// never as a MessagePack encoding error, and never lost in a buffered writer's drop.
#[derive(Debug, Default, Clone, Copy)]
pub struct CheckedMpkRecorder;

/// A writer that remembers the first I/O error it met.
struct Keep<W> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: std::io::Write> std::io::Write for Keep<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
            }
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<B: Backend> Recorder<B> for CheckedMpkRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        file.set_extension("mpk");
        let failed = |e: std::io::Error| RecorderError::Unknown(format!("{}: {e}", file.display()));
        let f = std::fs::File::create(&file).map_err(failed)?;
        let mut w = Keep {
            inner: std::io::BufWriter::new(f),
            error: None,
        };
        let encoded = rmp_serde::encode::write_named(&mut w, &item);
        if let Some(e) = w.error.take() {
            return Err(failed(e));
        }
        encoded.map_err(|e| RecorderError::Unknown(format!("{}: {e}", file.display())))?;
        let f = w.inner.into_inner().map_err(|e| failed(e.into_error()))?;
        f.sync_all().map_err(failed)
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        Recorder::<B>::load_item(&NamedMpkFileRecorder::<FullPrecisionSettings>::new(), file)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{run} has no {wanted}checkpoint (checkpoints: {have}); train it first")]
    Missing {
        run: PathBuf,
        /// `best `, `step-N ` or empty (the latest).
        wanted: String,
        have: String,
    },
    #[error("{path}: {reason}{hint}")]
    Load {
        path: PathBuf,
        reason: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// Which checkpoint of a run to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckpointChoice {
    #[default]
    Latest,
    /// The one `checkpoints/best.json` names.
    Best,
    Step(usize),
}

impl std::str::FromStr for CheckpointChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(Self::Latest),
            "best" => Ok(Self::Best),
            n => n
                .parse()
                .map(Self::Step)
                .map_err(|_| format!("`{s}` is not `latest`, `best` or a step number")),
        }
    }
}

/// Which weights of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weights {
    /// The EMA (JanusFlow evaluates the EMA model).
    #[default]
    Ema,
    /// The second EMA (`ema_decay_2`).
    Ema2,
    /// The raw weights.
    Model,
}

impl Weights {
    /// The record's file name in a checkpoint folder.
    pub fn file(self) -> &'static str {
        match self {
            Weights::Ema => EMA,
            Weights::Ema2 => EMA2,
            Weights::Model => MODEL,
        }
    }
}

/// What ranks checkpoints for `best.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BestMetric {
    /// Oracle adherence of an evaluation (higher is better).
    Adherence,
    /// Mean training loss since the previous checkpoint (lower is better).
    Loss,
}

/// The best checkpoint (`checkpoints/best.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Best {
    pub step: usize,
    pub metric: BestMetric,
    pub value: f64,
}

impl Best {
    /// Whether this checkpoint ranks above `other`: an evaluated checkpoint beats one only
    /// ranked by its training loss.
    pub fn beats(&self, other: &Best) -> bool {
        match (self.metric, other.metric) {
            (BestMetric::Adherence, BestMetric::Adherence) => self.value > other.value,
            (BestMetric::Loss, BestMetric::Loss) => self.value < other.value,
            (a, _) => a == BestMetric::Adherence,
        }
    }
}

/// `checkpoints/step-NNNNNNNN` of the run in `run`.
pub fn step_dir(run: &Path, step: usize) -> PathBuf {
    run.join(DIR).join(format!("step-{step:08}"))
}

/// Complete checkpoints of the run in `run` (step, folder), oldest first; a `.partial` folder
/// is an unfinished one and not listed.
pub fn list(run: &Path) -> Vec<(usize, PathBuf)> {
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(run.join(DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The newest complete checkpoint's step (0 when the run has none).
pub fn latest_step(run: &Path) -> usize {
    list(run).last().map_or(0, |c| c.0)
}

/// The best checkpoint recorded in `checkpoints/best.json`, if it is still there.
pub fn best(run: &Path) -> Option<(Best, PathBuf)> {
    let text = std::fs::read(run.join(DIR).join(BEST)).ok()?;
    let best: Best = serde_json::from_slice(&text).ok()?;
    let dir = step_dir(run, best.step);
    dir.is_dir().then_some((best, dir))
}

/// The checkpoint `choice` names in `run` (step, folder), if it is there.
pub fn resolve(run: &Path, choice: CheckpointChoice) -> Option<(usize, PathBuf)> {
    match choice {
        CheckpointChoice::Latest => list(run).pop(),
        CheckpointChoice::Best => best(run).map(|(b, dir)| (b.step, dir)),
        CheckpointChoice::Step(s) => list(run).into_iter().find(|(k, _)| *k == s),
    }
}

/// A run loaded for sampling.
pub struct LoadedRun<B: Backend> {
    pub run: RunDir,
    pub config: TrainConfig,
    pub flow: FlowConfig,
    pub model: FlowModel<B>,
    /// The step of the checkpoint the weights come from.
    pub step: usize,
    pub tokenizer: LlamaTokenizer,
}

/// The run's configs, one checkpoint's weights and its tokenizer.
pub fn load_run_model<B: Backend>(
    run_dir: &Path,
    weights: Weights,
    checkpoint: CheckpointChoice,
    device: &B::Device,
) -> Result<LoadedRun<B>, CheckpointError> {
    let run = RunDir::open(run_dir)?;
    let config: TrainConfig = run.config()?;
    let flow = FlowConfig::of(config.preset, config.variant);
    let Some((step, ckpt)) = resolve(run_dir, checkpoint) else {
        let all = list(run_dir);
        let have: Vec<String> = all.iter().map(|(s, _)| s.to_string()).collect();
        return Err(CheckpointError::Missing {
            run: run_dir.to_path_buf(),
            wanted: match checkpoint {
                CheckpointChoice::Latest => String::new(),
                CheckpointChoice::Best => "best ".to_string(),
                CheckpointChoice::Step(s) => format!("step-{s} "),
            },
            have: if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            },
        });
    };
    let file = ckpt.join(weights.file());
    let record = recorder()
        .load(file.clone(), device)
        .map_err(|e| CheckpointError::Load {
            path: file,
            reason: e.to_string(),
            hint: if weights == Weights::Ema2 {
                " (the run needs ema_decay_2 for a second EMA)"
            } else {
                ""
            },
        })?;
    let model = FlowModel::<B>::init(&flow, device).load_record(record);
    let tokenizer = LlamaTokenizer::from_path(run.path("tokenizer.json"))?;
    Ok(LoadedRun {
        run,
        config,
        flow,
        model,
        step,
        tokenizer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evaluated_checkpoint_outranks_one_ranked_by_loss() {
        let b = |metric, value| Best {
            step: 1,
            metric,
            value,
        };
        assert!(b(BestMetric::Adherence, 0.2).beats(&b(BestMetric::Adherence, 0.1)));
        assert!(b(BestMetric::Loss, 0.1).beats(&b(BestMetric::Loss, 0.2)));
        assert!(b(BestMetric::Adherence, 0.0).beats(&b(BestMetric::Loss, 0.0)));
        assert!(!b(BestMetric::Loss, 0.0).beats(&b(BestMetric::Adherence, 0.5)));
        let text = serde_json::to_string(&b(BestMetric::Adherence, 0.5)).unwrap();
        assert_eq!(text, r#"{"step":1,"metric":"adherence","value":0.5}"#);
    }

    #[cfg(unix)]
    #[test]
    fn a_full_disk_reads_as_a_full_disk_with_the_file_named() {
        use burn::module::Module;
        let dir = tempfile::tempdir().unwrap();
        // Writes to /dev/full fail with ENOSPC, as on a full disk.
        std::os::unix::fs::symlink("/dev/full", dir.path().join("model.mpk")).unwrap();
        let device = Default::default();
        let model = burn::nn::LinearConfig::new(64, 64).init::<crate::device::CpuBackend>(&device);
        let e = recorder()
            .record(model.into_record(), dir.path().join("model"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No space left on device"), "{e}");
        assert!(e.contains("model.mpk"), "{e}");
    }

    #[test]
    fn listing_skips_unfinished_checkpoints() {
        let run = tempfile::tempdir().unwrap();
        for name in ["step-00000010", "step-00000002", "step-00000020.partial"] {
            std::fs::create_dir_all(run.path().join(DIR).join(name)).unwrap();
        }
        let steps: Vec<usize> = list(run.path()).into_iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![2, 10]);
        assert_eq!(latest_step(run.path()), 10);
        assert!(best(run.path()).is_none());
    }
}
