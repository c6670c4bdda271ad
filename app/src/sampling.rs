//! Interactive sampling: one prompt, sampled in-process on a background thread from a run's
//! checkpoint with every tap on, into the run's `probes-lab/` store (with x_t previews), while
//! the UI watches each solver step's taps arrive through a [`ProbeObserver`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};

use flowlens_core::checkpoint::{CheckpointChoice, Weights};
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::flow::rectified::SamplerConfig;
use flowlens_core::flow::{TapPooling, TapRequest};
use flowlens_core::sample::{SampleRequest, sample_run};
use flowlens_core::store::{ProbeDtype, ProbeObserver, StoreName};

/// The store interactive samples go to.
pub const STORE: &str = "probes-lab";

/// What the sampling thread reports.
#[derive(Debug, Clone)]
pub enum SampleEvent {
    /// The pooled tap `tap` at solver step `step`: its L2 norm and its row.
    Tap {
        step: usize,
        tap: String,
        norm: f64,
    },
    Done(Result<PathBuf, String>),
}

struct Forward(Sender<SampleEvent>);

impl ProbeObserver for Forward {
    fn on_rows(
        &mut self,
        _seed: u64,
        step: usize,
        tap: &str,
        _offset: usize,
        rows: &[f32],
        width: usize,
    ) {
        if width == 0 {
            return;
        }
        let row = &rows[..width.min(rows.len())];
        let norm = row
            .iter()
            .map(|v| (*v as f64) * (*v as f64))
            .sum::<f64>()
            .sqrt();
        let _ = self.0.send(SampleEvent::Tap {
            step,
            tap: tap.to_string(),
            norm,
        });
    }
}

struct Task {
    run: PathBuf,
    request: SampleRequest,
    events: Sender<SampleEvent>,
}

impl BackendTask for Task {
    type Output = Result<PathBuf, String>;
    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let mut observer = Forward(self.events);
        sample_run::<B>(&self.run, &self.request, &mut observer, &device).map_err(|e| e.to_string())
    }
}

/// One interactive sample in flight or done.
pub struct Session {
    pub run: PathBuf,
    pub prompt: String,
    pub seed: u64,
    pub steps: usize,
    events: Receiver<SampleEvent>,
    /// `norms[tap][step]`.
    pub norms: BTreeMap<String, BTreeMap<usize, f64>>,
    pub latest_step: Option<usize>,
    pub result: Option<Result<PathBuf, String>>,
}

impl Session {
    /// Starts sampling `prompt` from `run` on `device`, in the background.
    pub fn start(
        run: PathBuf,
        prompt: String,
        seed: u64,
        steps: usize,
        cfg: f32,
        device: DeviceSpec,
        ctx: eframe::egui::Context,
    ) -> Self {
        let (tx, rx) = channel();
        let request = SampleRequest {
            prompts: vec![prompt.clone()],
            seeds: vec![seed],
            sampler: SamplerConfig {
                steps,
                cfg,
                pooling: TapPooling::Mean,
            },
            taps: TapRequest::parse("*"),
            batch_size: 1,
            weights: Weights::Ema,
            checkpoint: CheckpointChoice::Latest,
            probe_dtype: ProbeDtype::F32,
            previews: true,
            store: StoreName::new(STORE).expect("a plain folder name"),
            tap_steps: None,
        };
        let task_run = run.clone();
        std::thread::Builder::new()
            .name("flowlens-lab-sampler".into())
            .spawn(move || {
                let done_tx = tx.clone();
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    device
                        .run(Task {
                            run: task_run,
                            request,
                            events: tx,
                        })
                        .map_err(|e| e.to_string())
                        .and_then(|r| r)
                }))
                .unwrap_or_else(|_| Err("the sampler panicked (see the terminal)".into()));
                let _ = done_tx.send(SampleEvent::Done(out));
                ctx.request_repaint();
            })
            .expect("spawning the sampling thread");
        Self {
            run,
            prompt,
            seed,
            steps,
            events: rx,
            norms: BTreeMap::new(),
            latest_step: None,
            result: None,
        }
    }

    /// Takes in what arrived; returns whether anything did.
    pub fn poll(&mut self) -> bool {
        let mut any = false;
        for e in self.events.try_iter() {
            any = true;
            match e {
                SampleEvent::Tap { step, tap, norm } => {
                    self.norms.entry(tap).or_default().insert(step, norm);
                    self.latest_step = Some(self.latest_step.map_or(step, |s| s.max(step)));
                }
                SampleEvent::Done(r) => self.result = Some(r),
            }
        }
        any
    }

    pub fn running(&self) -> bool {
        self.result.is_none()
    }
}
