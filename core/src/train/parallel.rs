//! Data parallelism in one process (docs/SCALE.md): one replica of the model and its optimisers
//! per device, the first in the trainer and each other one in a worker thread. Every optimiser
//! step, each device computes the gradients of its share of every micro-batch (the rows
//! `rank * b / n .. (rank + 1) * b / n`, by global item index, so `n` devices see exactly the
//! items and randomness one device would), the gradients are averaged across the devices as
//! one flat buffer built in module order (after gradient accumulation, before global-norm
//! clipping), and every replica applies the same clipping and AdamW step, so the replicas stay
//! bit for bit identical (checked by a checksum of every parameter at the start and, on
//! request, after steps). Only the first device's trainer writes checkpoints, metrics and
//! samples; a resumed run copies its loaded state to every replica.
//!
//! The exchange runs on burn-collective's local level (an in-process engine behind burn's
//! `collective` feature). Its own all-reduce sums the peers in the iteration order of a hash
//! map, which changes from run to run when there are three or more devices (the last bits of
//! the mean would differ, and a resumed run would not repeat itself); the average here is
//! therefore one burn-collective broadcast from each device in turn, summed by every device in
//! rank order: the same bits on every device and in every run. Each call is bounded by a
//! timeout (`FLOWLENS_COLLECTIVE_TIMEOUT`, seconds, default 600): a device that fails or hangs
//! is an error naming it, never a hang.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use burn::collective::{
    CollectiveConfig, PeerId, broadcast, finish_collective, register, reset_collective,
};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use crate::flow::FlowModel;
use crate::train::error::TrainError;
use crate::train::grads::Optim;
use crate::train::trainer::{LocalFailure, LocalGrads, StepInputs, Trainer, apply_grads, shard_of};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Elements per exchange call (64 MiB of f32): a larger gradient buffer goes in several calls.
pub const CHUNK: usize = 16 << 20;

/// The environment variable bounding each exchange, in seconds.
pub const TIMEOUT_ENV: &str = "FLOWLENS_COLLECTIVE_TIMEOUT";

fn timeout() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0 && s.is_finite())
        .unwrap_or(600.0);
    Duration::from_secs_f64(secs)
}

/// burn-collective keeps one session per process: a second data-parallel trainer waits for
/// the first to end (tests run in threads of one process).
static SESSION: AtomicBool = AtomicBool::new(false);

struct Session;

impl Session {
    fn acquire<Bk: Backend>() -> Self {
        while SESSION
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        reset_collective::<Bk>();
        Session
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        SESSION.store(false, Ordering::Release);
    }
}

/// Runs `f` on a helper thread and waits at most the collective timeout for it.
fn bounded<T: Send + 'static>(
    what: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TrainError> {
    let limit = timeout();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).map_err(|_| {
        TrainError::Parallel(format!(
            "{what}: no answer within {:.0} s (set {TIMEOUT_ENV} for a longer limit); another \
             device failed or hangs",
            limit.as_secs_f64()
        ))
    })
}

/// One device's side of the exchange.
#[derive(Debug, Clone)]
struct Exchange {
    peer: PeerId,
    rank: usize,
    world: usize,
    label: String,
}

impl Exchange {
    /// Joins the session (blocks until every device has).
    fn register<Bk: Backend>(&self, device: Bk::Device) -> Result<(), TrainError> {
        let (peer, world) = (self.peer, self.world);
        let config = CollectiveConfig::default().with_num_devices(world);
        bounded(
            format!("{}: joining the other devices", self.label),
            move || register::<Bk>(peer, device, config),
        )?
        .map_err(|e| TrainError::Parallel(format!("{}: cannot join ({e:?})", self.label)))
    }

    /// The mean over the devices of `flat`, the same bits on every device: each device's
    /// buffer broadcast in turn, summed in rank order.
    fn mean<Bk: Backend>(&self, flat: Tensor<Bk, 1>) -> Result<Tensor<Bk, 1>, TrainError> {
        let n = flat.dims()[0];
        let mut out = Vec::new();
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let part = flat.clone().narrow(0, start, len);
            let mut sum: Option<Tensor<Bk, 1>> = None;
            for root in 0..self.world {
                let mine = (root == self.rank).then(|| part.clone().into_primitive().tensor());
                let peer = self.peer;
                let got = bounded(
                    format!("{}: exchanging gradients with device {root}", self.label),
                    move || broadcast::<Bk>(peer, mine),
                )?
                .map_err(|e| {
                    TrainError::Parallel(format!("{}: exchange failed ({e:?})", self.label))
                })?;
                let t = Tensor::<Bk, 1>::from_primitive(TensorPrimitive::Float(got));
                sum = Some(match sum {
                    None => t,
                    Some(s) => s + t,
                });
            }
            out.push(sum.expect("at least one device") / self.world as f32);
        }
        Ok(Tensor::cat(out, 0))
    }

    /// Leaves the session (waiting a few seconds at most).
    fn finish<Bk: Backend>(&self) {
        let peer = self.peer;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(finish_collective::<Bk>(peer));
        });
        let _ = rx.recv_timeout(Duration::from_secs(10));
    }
}

/// The parameters a step updates: every trainable one outside the LLM (the heads) and, in
/// stage 2, the LLM's, in module order.
struct Layout {
    llm: HashSet<ParamId>,
}

impl Layout {
    fn of<B: AutodiffBackend>(model: &FlowModel<B>) -> Self {
        struct Ids(HashSet<ParamId>);
        impl<B: Backend> ModuleVisitor<B> for Ids {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.insert(param.id);
            }
        }
        let mut ids = Ids(HashSet::new());
        model.llm.visit(&mut ids);
        Self { llm: ids.0 }
    }
}

/// Visits the parameters of one part of the buffer in module order: trainable ones, those of
/// the LLM (`llm`) or the others.
fn in_part<B: Backend, const D: usize>(
    param: &Param<Tensor<B, D>>,
    llm_ids: &HashSet<ParamId>,
    llm: bool,
) -> bool {
    param.is_require_grad() && llm_ids.contains(&param.id) == llm
}

fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// The gradients of one part as flat pieces (zeros where a parameter has none) and which
/// parameters had one.
struct Flatten<'a, B: AutodiffBackend> {
    grads: Option<&'a GradientsParams>,
    layout: &'a Layout,
    llm: bool,
    device: &'a B::Device,
    parts: Vec<Tensor<Inner<B>, 1>>,
    present: Vec<bool>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !in_part(param, &self.layout.llm, self.llm) {
            return;
        }
        let n = numel(&param.val().dims());
        let g = self
            .grads
            .and_then(|g| g.get::<Inner<B>, D>(param.id))
            .map(|g| g.reshape([n]));
        self.present.push(g.is_some());
        self.parts
            .push(g.unwrap_or_else(|| Tensor::zeros([n], self.device)));
    }
}

/// Gradients from the averaged buffer, for the parameters that had one.
struct Unflatten<'a, B: AutodiffBackend> {
    layout: &'a Layout,
    llm: bool,
    flat: Tensor<Inner<B>, 1>,
    offset: usize,
    present: std::vec::IntoIter<bool>,
    out: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !in_part(param, &self.layout.llm, self.llm) {
            return;
        }
        let dims: [usize; D] = param.val().dims();
        let n = numel(&dims);
        let piece = self.flat.clone().narrow(0, self.offset, n);
        self.offset += n;
        if self.present.next().unwrap_or(false) {
            self.out
                .register::<Inner<B>, D>(param.id, piece.reshape(dims));
        }
    }
}

/// Averages one device's step over every device: its gradients (or zeros and a failure flag
/// when it has none: the others must not wait for it) and its loss, as one buffer
/// `[heads..., llm... (stage 2), loss sum, failed]`.
fn average<B: AutodiffBackend>(
    exchange: &Exchange,
    layout: &Layout,
    model: &FlowModel<B>,
    device: &B::Device,
    stage: u8,
    local: Result<LocalGrads, LocalFailure>,
) -> Result<LocalGrads, LocalFailure> {
    let (heads, llm, loss_sum) = match &local {
        Ok(g) => (Some(&g.heads), g.llm.as_ref(), g.loss_sum),
        Err(_) => (None, None, 0.0),
    };
    let (mut parts, heads_present) = flatten(model, layout, device, heads, false);
    let llm_present = if stage == 2 {
        let (p, present) = flatten(model, layout, device, llm, true);
        parts.extend(p);
        Some(present)
    } else {
        None
    };
    let failed = if local.is_err() { 1.0 } else { 0.0 };
    parts.push(Tensor::from_floats([loss_sum, failed], device));
    let flat = Tensor::cat(parts, 0);
    let n = flat.dims()[0];
    let mean = exchange.mean(flat).map_err(LocalFailure::Error)?;
    let tail: Vec<f32> = mean
        .clone()
        .narrow(0, n - 2, 2)
        .into_data()
        .to_vec()
        .unwrap_or_default();
    let local = local?;
    if tail.get(1).copied().unwrap_or(1.0) != 0.0 {
        return Err(LocalFailure::Error(TrainError::Parallel(format!(
            "{}: another device failed this step (its error is reported by that device)",
            exchange.label
        ))));
    }
    let (heads, offset) = unflatten(model, layout, &mean, heads_present, 0, false);
    let llm = llm_present.map(|present| unflatten(model, layout, &mean, present, offset, true).0);
    Ok(LocalGrads {
        heads,
        llm: if local.llm.is_some() { llm } else { None },
        loss_sum: tail[0],
    })
}

/// One part of the buffer (the LLM's parameters, or the others) as flat pieces.
fn flatten<B: AutodiffBackend>(
    model: &FlowModel<B>,
    layout: &Layout,
    device: &B::Device,
    grads: Option<&GradientsParams>,
    llm: bool,
) -> (Vec<Tensor<Inner<B>, 1>>, Vec<bool>) {
    let mut f = Flatten::<B> {
        grads,
        layout,
        llm,
        device,
        parts: Vec::new(),
        present: Vec::new(),
    };
    if llm {
        model.llm.visit(&mut f);
    } else {
        model.visit(&mut f);
    }
    (f.parts, f.present)
}

/// The gradients of one part from the averaged buffer, starting at `offset`; returns them and
/// where the part ends.
fn unflatten<B: AutodiffBackend>(
    model: &FlowModel<B>,
    layout: &Layout,
    flat: &Tensor<Inner<B>, 1>,
    present: Vec<bool>,
    offset: usize,
    llm: bool,
) -> (GradientsParams, usize) {
    let mut u = Unflatten::<B> {
        layout,
        llm,
        flat: flat.clone(),
        offset,
        present: present.into_iter(),
        out: GradientsParams::new(),
    };
    if llm {
        model.llm.visit(&mut u);
    } else {
        model.visit(&mut u);
    }
    (u.out, u.offset)
}

/// 64-bit FNV-1a of every float parameter's bits, in module order.
pub fn param_checksum<B: Backend, M: Module<B>>(module: &M) -> u64 {
    struct Sum(crate::fsutil::Fnv64);
    impl<B: Backend> ModuleVisitor<B> for Sum {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let values: Vec<f32> = param
                .val()
                .into_data()
                .convert::<f32>()
                .to_vec()
                .unwrap_or_default();
            for v in values {
                self.0.bytes(&v.to_bits().to_le_bytes());
            }
        }
    }
    let mut sum = Sum(crate::fsutil::Fnv64::new());
    module.visit(&mut sum);
    sum.0.value()
}

/// Reads every parameter once: burn's parameters are initialised on first use, and a clone of
/// an uninitialised one would draw its own random values.
fn realise<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

enum Job {
    Step(usize),
    Quit,
}

/// A worker's answer: its checksum at the start, or after a step (when checked), or an error.
type Answer = Result<Option<u64>, String>;

struct Worker {
    jobs: Sender<Job>,
    answers: Receiver<Answer>,
    handle: Option<JoinHandle<()>>,
    label: String,
}

/// The other devices of a data-parallel run, and the first device's side of the exchange.
pub struct Parallel<B: AutodiffBackend> {
    exchange: Exchange,
    layout: Layout,
    workers: Vec<Worker>,
    check_every: usize,
    stage: u8,
    broken: bool,
    /// Seconds the last step's average took on the first device.
    last_exchange_s: f64,
    _session: Session,
    _b: std::marker::PhantomData<B>,
}

/// One replica on a worker thread.
struct Replica<B: AutodiffBackend> {
    model: FlowModel<B>,
    optim_heads: Optim<B>,
    optim_llm: Optim<B>,
    inputs: StepInputs,
    device: B::Device,
    exchange: Exchange,
    layout: Layout,
    check_every: usize,
}

impl<B: AutodiffBackend> Replica<B> {
    fn step(&mut self, step: usize) -> Answer {
        let c = &self.inputs.config;
        let stage = c.stage(step);
        let shard = shard_of(c.batch_size, self.exchange.rank, self.exchange.world);
        let local = self
            .inputs
            .local_grads(&self.model, step, stage, shard, &self.device);
        let grads = average(
            &self.exchange,
            &self.layout,
            &self.model,
            &self.device,
            stage,
            local,
        )
        .map_err(|f| match f {
            LocalFailure::NonFinite { loss, first } => format!(
                "{}: the loss is {loss} at step {step} ({first} went non-finite first)",
                self.exchange.label
            ),
            LocalFailure::Error(e) => format!("{}: {e}", self.exchange.label),
        })?;
        let (model, _, _) = apply_grads(
            c,
            step,
            self.model.clone(),
            &mut self.optim_heads,
            &mut self.optim_llm,
            grads,
        )
        .map_err(|id| {
            format!(
                "{}: the gradient of parameter {id} is not finite at step {step}",
                self.exchange.label
            )
        })?;
        self.model = model;
        let due = self.check_every > 0 && (step + 1).is_multiple_of(self.check_every);
        Ok(due.then(|| param_checksum(&self.model)))
    }

    fn run(mut self, jobs: Receiver<Job>, answers: Sender<Answer>) {
        let device = self.device.clone();
        if let Err(e) = self.exchange.register::<Inner<B>>(device) {
            let _ = answers.send(Err(e.to_string()));
            return;
        }
        if answers.send(Ok(Some(param_checksum(&self.model)))).is_err() {
            return;
        }
        while let Ok(Job::Step(step)) = jobs.recv() {
            let answer = self.step(step);
            let failed = answer.is_err();
            if answers.send(answer).is_err() || failed {
                return;
            }
        }
        self.exchange.finish::<Inner<B>>();
    }
}

impl<B: AutodiffBackend> Parallel<B>
where
    FlowModel<B>: Send + 'static,
    Optim<B>: Send + 'static,
{
    /// Starts the replicas of `trainer` (its state as prepared or resumed) on `others`, the
    /// devices besides the trainer's own; `check_every` > 0 compares every replica's checksum
    /// with the first device's after every that many steps.
    pub fn start(
        trainer: &mut Trainer<B>,
        others: Vec<B::Device>,
        labels: Vec<String>,
        check_every: usize,
    ) -> Result<(), TrainError> {
        let world = others.len() + 1;
        let b = trainer.config.batch_size;
        if !b.is_multiple_of(world) {
            return Err(TrainError::Parallel(format!(
                "the batch size {b} is not a multiple of the {world} devices: each device \
                 computes batch_size / devices rows of every micro-batch; choose a batch size \
                 divisible by {world}"
            )));
        }
        let session = Session::acquire::<Inner<B>>();
        realise(&trainer.model);
        let label = |r: usize| {
            labels
                .get(r)
                .cloned()
                .unwrap_or_else(|| format!("device {r}"))
        };
        let exchange = |rank: usize| Exchange {
            peer: PeerId::from(rank),
            rank,
            world,
            label: label(rank),
        };
        let mut workers = Vec::new();
        for (i, device) in others.into_iter().enumerate() {
            let rank = i + 1;
            let replica = Replica::<B> {
                model: trainer.model.clone().fork(&device),
                optim_heads: trainer.optim_heads.clone(),
                optim_llm: trainer.optim_llm.clone(),
                inputs: trainer.inputs(),
                device,
                exchange: exchange(rank),
                layout: Layout::of(&trainer.model),
                check_every,
            };
            let (jobs, job_rx) = mpsc::channel();
            let (answer_tx, answers) = mpsc::channel();
            let handle = std::thread::Builder::new()
                .name(format!("flowlens-replica-{rank}"))
                .stack_size(64 << 20)
                .spawn(move || replica.run(job_rx, answer_tx))
                .map_err(|e| TrainError::Parallel(format!("cannot start a thread: {e}")))?;
            workers.push(Worker {
                jobs,
                answers,
                handle: Some(handle),
                label: label(rank),
            });
        }
        let mut parallel = Parallel {
            exchange: exchange(0),
            layout: Layout::of(&trainer.model),
            workers,
            check_every,
            stage: 1,
            broken: false,
            last_exchange_s: 0.0,
            _session: session,
            _b: std::marker::PhantomData,
        };
        parallel
            .exchange
            .register::<Inner<B>>(trainer.device.clone())
            .inspect_err(|_| parallel.broken = true)?;
        // The replicas start identical.
        let first = param_checksum(&trainer.model);
        parallel.collect(Some(first), "at the start")?;
        trainer.parallel = Some(parallel);
        Ok(())
    }
}

impl<B: AutodiffBackend> Parallel<B> {
    /// How many devices.
    pub fn world(&self) -> usize {
        self.exchange.world
    }

    /// Seconds the last step's gradient average took on the first device (flattening, the
    /// exchange and the waits for the other devices, splitting).
    pub fn last_exchange_s(&self) -> f64 {
        self.last_exchange_s
    }

    /// Hands `step` to every other device.
    pub(crate) fn begin(&mut self, step: usize) -> Result<(), TrainError> {
        for w in &self.workers {
            if w.jobs.send(Job::Step(step)).is_err() {
                self.broken = true;
                return Err(TrainError::Parallel(format!(
                    "{} stopped (its thread ended)",
                    w.label
                )));
            }
        }
        Ok(())
    }

    /// The first device's side of the average (see [`average`]).
    pub(crate) fn reduce(
        &mut self,
        model: &FlowModel<B>,
        local: Result<LocalGrads, LocalFailure>,
        stage: u8,
        device: &B::Device,
    ) -> Result<LocalGrads, LocalFailure> {
        self.stage = stage;
        let started = std::time::Instant::now();
        let out = average(&self.exchange, &self.layout, model, device, stage, local);
        self.last_exchange_s = started.elapsed().as_secs_f64();
        if let Err(LocalFailure::Error(TrainError::Parallel(_))) = &out {
            // A device failed or did not answer: its error is collected below.
            if let Err(e) = self.collect(None, "") {
                self.broken = true;
                return Err(LocalFailure::Error(e));
            }
        }
        out
    }

    /// After the first device's update: every other device's answer, and (when due) whether
    /// its replica is still the first device's.
    pub(crate) fn finish(&mut self, step: usize, model: &FlowModel<B>) -> Result<(), TrainError> {
        let due = self.check_every > 0 && (step + 1).is_multiple_of(self.check_every);
        let first = due.then(|| param_checksum(model));
        self.collect(first, &format!("after step {step}"))
    }

    fn collect(&mut self, first: Option<u64>, when: &str) -> Result<(), TrainError> {
        let limit = timeout();
        for w in &self.workers {
            let answer = w.answers.recv_timeout(limit).map_err(|_| {
                TrainError::Parallel(format!(
                    "{} did not answer within {:.0} s",
                    w.label,
                    limit.as_secs_f64()
                ))
            });
            let answer = match answer {
                Ok(a) => a.map_err(TrainError::Parallel),
                Err(e) => Err(e),
            };
            match answer {
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
                Ok(Some(sum)) if first.is_some_and(|f| f != sum) => {
                    self.broken = true;
                    return Err(TrainError::Parallel(format!(
                        "the replica on {} differs from the one on {} {when} (checksums \
                         {sum:016x} and {:016x})",
                        w.label,
                        self.exchange.label,
                        first.unwrap_or_default()
                    )));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

impl<B: AutodiffBackend> Drop for Parallel<B> {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.jobs.send(Job::Quit);
        }
        if self.broken {
            // A device may be stuck in an exchange: leave its thread; the process ends soon.
            return;
        }
        self.exchange.finish::<Inner<B>>();
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// Times the stage-2 gradient average of `model` (every trainable parameter, the LLM's
/// included) across `world` replicas of this process, `rounds` times: seconds per round on the
/// first device. The benchmark of docs/PERFORMANCE.md (`cargo bench -p flowlens-core --bench
/// exchange`); gradients are constants, the cost does not depend on their values.
pub fn time_average<B: AutodiffBackend>(
    model: &FlowModel<B>,
    device: &B::Device,
    world: usize,
    rounds: usize,
) -> Result<Vec<f64>, TrainError>
where
    FlowModel<B>: Send + 'static,
{
    struct Fill<'a> {
        layout: &'a Layout,
        llm: bool,
        out: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Fill<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if in_part(param, &self.layout.llm, self.llm) {
                let g = Tensor::<Inner<B>, D>::ones(param.val().dims(), &param.val().device());
                self.out.register::<Inner<B>, D>(param.id, g);
            }
        }
    }
    let _session = Session::acquire::<Inner<B>>();
    realise(model);
    let grads = |model: &FlowModel<B>| {
        let layout = Layout::of(model);
        let mut heads = Fill {
            layout: &layout,
            llm: false,
            out: GradientsParams::new(),
        };
        model.visit(&mut heads);
        let mut llm = Fill {
            layout: &layout,
            llm: true,
            out: GradientsParams::new(),
        };
        model.llm.visit(&mut llm);
        LocalGrads {
            heads: heads.out,
            llm: Some(llm.out),
            loss_sum: 1.0,
        }
    };
    let exchange = move |rank: usize| Exchange {
        peer: PeerId::from(rank),
        rank,
        world,
        label: format!("device {rank}"),
    };
    let run = move |model: FlowModel<B>, device: B::Device, rank: usize| {
        let ex = exchange(rank);
        ex.register::<Inner<B>>(device.clone())?;
        let layout = Layout::of(&model);
        let mut times = Vec::new();
        for _ in 0..rounds {
            let started = std::time::Instant::now();
            average(&ex, &layout, &model, &device, 2, Ok(grads(&model)))
                .map_err(|_| TrainError::Parallel("the timed average failed".into()))?;
            times.push(started.elapsed().as_secs_f64());
        }
        ex.finish::<Inner<B>>();
        Ok::<_, TrainError>(times)
    };
    let others: Vec<_> = (1..world)
        .map(|rank| {
            let (m, d) = (model.clone(), device.clone());
            std::thread::spawn(move || run(m, d, rank))
        })
        .collect();
    let times = run(model.clone(), device.clone(), 0);
    for h in others {
        h.join()
            .map_err(|_| TrainError::Parallel("a timing thread panicked".into()))??;
    }
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowConfig, Variant};
    use burn::backend::Flex;
    use burn::module::ModuleMapper;

    #[test]
    fn the_checksum_sees_a_change_of_one_bit_in_one_parameter() {
        let device = Default::default();
        let model = FlowModel::<Flex>::init(&FlowConfig::tiny(Variant::Both), &device);
        realise(&model);
        let copy = model.clone();
        assert_eq!(param_checksum(&model), param_checksum(&copy));
        // The last element of the first parameter, one unit in the last place up.
        struct Nudge(bool);
        impl<B: Backend> ModuleMapper<B> for Nudge {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                if self.0 {
                    return param;
                }
                self.0 = true;
                let (id, t, mapper) = param.consume();
                let (dims, device) = (t.dims(), t.device());
                let mut v: Vec<f32> = t.into_data().to_vec().unwrap();
                let last = v.len() - 1;
                v[last] = f32::from_bits(v[last].to_bits() + 1);
                let t = Tensor::from_data(burn::tensor::TensorData::new(v, dims), &device);
                Param::from_mapped_value(id, t, mapper)
            }
        }
        let nudged = copy.map(&mut Nudge(false));
        assert_ne!(param_checksum(&model), param_checksum(&nudged));
    }
}
