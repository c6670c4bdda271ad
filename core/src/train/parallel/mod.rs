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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use burn::collective::{
    CollectiveConfig, PeerId, broadcast, finish_collective, register, reset_collective,
};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::flow::FlowModel;
use crate::train::error::TrainError;
use crate::train::grads::Optim;
use crate::train::nccl::{NcclSlot, cuda_ordinal, new_id as new_nccl_id};
use crate::train::nodes::{NodeLink, NodeSpec, Welcome};
use crate::train::trainer::{
    LocalFailure, LocalGrads, StepExchange, StepInputs, Trainer, apply_grads, shard_of,
};
use layout::{Layout, flatten, in_part, numel, unflatten};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// `FLOWLENS_EXCHANGE=collective`: GPUs exchange through burn-collective like CPU replicas,
/// instead of NCCL (a check of the engine; it also allows one GPU named twice).
pub const EXCHANGE_ENV: &str = "FLOWLENS_EXCHANGE";

/// Whether GPUs use burn-collective instead of NCCL ([`EXCHANGE_ENV`]).
pub fn collective_on_gpus() -> bool {
    std::env::var(EXCHANGE_ENV).is_ok_and(|v| v.trim().eq_ignore_ascii_case("collective"))
}

/// Elements per exchange call (64 MiB of f32): a larger gradient buffer goes in several calls.
pub const CHUNK: usize = 16 << 20;

pub use crate::train::nodes::COLLECTIVE_TIMEOUT_ENV as TIMEOUT_ENV;
use crate::train::nodes::exchange_timeout;

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
    let limit = exchange_timeout();
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
#[derive(Clone)]
struct Exchange {
    peer: PeerId,
    /// This device among its node's devices, and how many the node has.
    rank: usize,
    world: usize,
    /// This device among every node's devices, and how many there are.
    global_rank: usize,
    global_world: usize,
    /// The link between the nodes, held by each node's first device (several nodes only).
    link: Option<Arc<Mutex<NodeLink>>>,
    /// NCCL on CUDA devices: the whole average, over every GPU of every node.
    nccl: Option<Arc<NcclSlot>>,
    label: String,
}

impl Exchange {
    /// Joins the node's session (blocks until every device of the node has).
    fn register<Bk: Backend>(&self, device: Bk::Device) -> Result<(), TrainError> {
        if let Some(slot) = &self.nccl {
            let (slot, rank, world) = (slot.clone(), self.global_rank, self.global_world);
            return bounded(
                format!("{}: joining NCCL (every GPU of every node)", self.label),
                move || slot.connect(rank, world),
            )?;
        }
        if self.world == 1 {
            return Ok(());
        }
        let (peer, world) = (self.peer, self.world);
        let config = CollectiveConfig::default().with_num_devices(world);
        bounded(
            format!("{}: joining the other devices", self.label),
            move || register::<Bk>(peer, device, config),
        )?
        .map_err(|e| TrainError::Parallel(format!("{}: cannot join ({e:?})", self.label)))
    }

    /// One burn-collective broadcast of the node's device `root` (this device gives `mine`
    /// when it is the root).
    fn broadcast<Bk: Backend>(
        &self,
        root: usize,
        mine: Option<Tensor<Bk, 1>>,
    ) -> Result<Tensor<Bk, 1>, TrainError> {
        let peer = self.peer;
        let mine = mine.map(|t| t.into_primitive().tensor());
        let got = bounded(
            format!("{}: exchanging gradients with device {root}", self.label),
            move || broadcast::<Bk>(peer, mine),
        )?
        .map_err(|e| TrainError::Parallel(format!("{}: exchange failed ({e:?})", self.label)))?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(got)))
    }

    /// The mean over every device of every node of `flat`, the same bits on every device: each
    /// device's buffer broadcast in turn within its node and summed in rank order; with several
    /// nodes, the node sums added in node order on node 0 and the total handed back.
    fn mean<Bk: Backend>(&self, flat: Tensor<Bk, 1>) -> Result<Tensor<Bk, 1>, TrainError> {
        let n = flat.dims()[0];
        let device = flat.device();
        if let Some(slot) = &self.nccl {
            let mut out = Vec::new();
            for start in (0..n).step_by(CHUNK) {
                let len = CHUNK.min(n - start);
                let host: Vec<f32> = flat
                    .clone()
                    .narrow(0, start, len)
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .unwrap_or_default();
                let (slot, label) = (slot.clone(), self.label.clone());
                let mean = bounded(format!("{label}: ncclAllReduce"), move || slot.mean(host))??;
                out.push(Tensor::from_data(TensorData::new(mean, [len]), &device));
            }
            return Ok(Tensor::cat(out, 0));
        }
        let mut out = Vec::new();
        for start in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - start);
            let part = flat.clone().narrow(0, start, len);
            let mut sum = if self.world == 1 {
                part
            } else {
                let mut sum: Option<Tensor<Bk, 1>> = None;
                for root in 0..self.world {
                    let t = self.broadcast(root, (root == self.rank).then(|| part.clone()))?;
                    sum = Some(match sum {
                        None => t,
                        Some(s) => s + t,
                    });
                }
                sum.expect("at least one device")
            };
            if let Some(link) = &self.link {
                let host: Vec<f32> = sum
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .unwrap_or_default();
                let total = link.lock().unwrap_or_else(|e| e.into_inner()).sum(host)?;
                sum = Tensor::from_data(TensorData::new(total, [len]), &device);
            }
            if self.global_world > self.world && self.world > 1 {
                // The node's first device hands the total to the others.
                sum = self.broadcast(0, (self.rank == 0).then_some(sum))?;
            }
            out.push(sum / self.global_world as f32);
        }
        Ok(Tensor::cat(out, 0))
    }

    /// Leaves the session (waiting a few seconds at most).
    fn finish<Bk: Backend>(&self) {
        if self.world == 1 || self.nccl.is_some() {
            return;
        }
        let peer = self.peer;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(finish_collective::<Bk>(peer));
        });
        let _ = rx.recv_timeout(Duration::from_secs(10));
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

/// Hands every float parameter's values to `f`, in module order, one parameter at a time.
fn each_param<B: Backend, M: Module<B>>(module: &M, f: impl FnMut(Vec<f32>)) {
    struct Each<F>(F);
    impl<B: Backend, F: FnMut(Vec<f32>)> ModuleVisitor<B> for Each<F> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            (self.0)(
                param
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .unwrap_or_default(),
            );
        }
    }
    module.visit(&mut Each(f));
}

/// 64-bit FNV-1a of every float parameter's bits, in module order.
pub fn param_checksum<B: Backend, M: Module<B>>(module: &M) -> u64 {
    let mut sum = crate::fsutil::Fnv64::new();
    each_param(module, |values| {
        for v in values {
            sum.bytes(&v.to_bits().to_le_bytes());
        }
    });
    sum.value()
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

/// One replica: on a worker thread, or a following node's first device.
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
        let shard = shard_of(
            c.batch_size,
            self.exchange.global_rank,
            self.exchange.global_world,
        );
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

/// Where this process's devices sit among every node's.
struct Placement {
    node_rank: usize,
    nnodes: usize,
    link: Option<Arc<Mutex<NodeLink>>>,
    /// NCCL's unique id when the devices are GPUs.
    nccl_id: Option<Vec<u8>>,
}

impl Placement {
    fn single() -> Self {
        Self {
            node_rank: 0,
            nnodes: 1,
            link: None,
            nccl_id: None,
        }
    }

    /// NCCL's id for a run on `labels` (the devices' names): drawn here for GPUs, none on the
    /// CPU.
    fn nccl_id_for(labels: &[String]) -> Result<Option<Vec<u8>>, TrainError> {
        if collective_on_gpus() {
            return Ok(None);
        }
        if labels.iter().all(|l| cuda_ordinal(l).is_some()) && !labels.is_empty() {
            return new_nccl_id().map(Some);
        }
        Ok(None)
    }

    /// The exchange of local device `rank` of `world`, named `label`.
    fn exchange(&self, rank: usize, world: usize, label: String) -> Exchange {
        Exchange {
            peer: PeerId::from(rank),
            rank,
            world,
            global_rank: self.node_rank * world + rank,
            global_world: self.nnodes * world,
            link: if rank == 0 { self.link.clone() } else { None },
            nccl: self.nccl_id.as_ref().map(|id| {
                Arc::new(NcclSlot::new(
                    id.clone(),
                    cuda_ordinal(&label).unwrap_or(rank),
                ))
            }),
            label: if self.nnodes > 1 {
                format!("node {} {label}", self.node_rank)
            } else {
                label
            },
        }
    }
}

/// The replicas on this process's other devices (worker threads).
struct Locals {
    workers: Vec<Worker>,
    broken: bool,
    _session: Session,
}

impl Locals {
    /// Starts a replica of the given state on each of `others` (local ranks 1..), registers
    /// them and the first device with burn-collective, and checks that every replica starts
    /// as `model` does.
    #[allow(clippy::too_many_arguments)]
    fn start<B: AutodiffBackend>(
        model: &FlowModel<B>,
        optims: (&Optim<B>, &Optim<B>),
        inputs: &StepInputs,
        first: &Exchange,
        first_device: &B::Device,
        others: Vec<B::Device>,
        labels: &[String],
        placement: &Placement,
        check_every: usize,
    ) -> Result<Self, TrainError>
    where
        FlowModel<B>: Send + 'static,
        Optim<B>: Send + 'static,
    {
        let session = Session::acquire::<Inner<B>>();
        let world = others.len() + 1;
        let label = |r: usize| {
            labels
                .get(r)
                .cloned()
                .unwrap_or_else(|| format!("device {r}"))
        };
        let mut workers = Vec::new();
        for (i, device) in others.into_iter().enumerate() {
            let rank = i + 1;
            let replica = Replica::<B> {
                model: model.clone().fork(&device),
                optim_heads: optims.0.clone(),
                optim_llm: optims.1.clone(),
                inputs: inputs.clone(),
                device,
                exchange: placement.exchange(rank, world, label(rank)),
                layout: Layout::of(model),
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
        let mut locals = Locals {
            workers,
            broken: false,
            _session: session,
        };
        first
            .register::<Inner<B>>(first_device.clone())
            .inspect_err(|_| locals.broken = true)?;
        locals.collect(Some(param_checksum(model)), &first.label, "at the start")?;
        Ok(locals)
    }

    /// Hands `step` to every worker.
    fn begin(&mut self, step: usize) -> Result<(), TrainError> {
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

    /// Every worker's answer; a checksum that is not `first` (the first device's) is an error.
    fn collect(
        &mut self,
        first: Option<u64>,
        first_label: &str,
        when: &str,
    ) -> Result<(), TrainError> {
        let limit = exchange_timeout();
        for w in &self.workers {
            let answer = match w.answers.recv_timeout(limit) {
                Ok(a) => a.map_err(TrainError::Parallel),
                Err(_) => Err(TrainError::Parallel(format!(
                    "{} did not answer within {:.0} s",
                    w.label,
                    limit.as_secs_f64()
                ))),
            };
            match answer {
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
                Ok(Some(sum)) if first.is_some_and(|f| f != sum) => {
                    self.broken = true;
                    return Err(TrainError::Parallel(format!(
                        "the replica on {} differs from the one on {first_label} {when} \
                         (checksums {sum:016x} and {:016x})",
                        w.label,
                        first.unwrap_or_default()
                    )));
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

impl Drop for Locals {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.jobs.send(Job::Quit);
        }
        if self.broken {
            // A device may be stuck in an exchange: leave its thread; the process ends soon.
            return;
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// The other devices of a data-parallel run (and nodes, on node 0), and the first device's side
/// of the exchange.
pub struct Parallel<B: AutodiffBackend> {
    exchange: Exchange,
    layout: Layout,
    locals: Locals,
    check_every: usize,
    /// Seconds the last step's average took on the first device.
    last_exchange_s: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> Parallel<B>
where
    FlowModel<B>: Send + 'static,
    Optim<B>: Send + 'static,
{
    /// Starts the replicas of `trainer` (its state as prepared or resumed) on `others`, the
    /// devices besides the trainer's own, and, with `node` (node 0 of several), waits for the
    /// other nodes and hands them the starting state; `check_every` > 0 compares every replica
    /// with the first device's after every that many steps.
    pub fn start(
        trainer: &mut Trainer<B>,
        others: Vec<B::Device>,
        labels: Vec<String>,
        check_every: usize,
        node: Option<NodeSpec>,
    ) -> Result<(), TrainError> {
        let world = others.len() + 1;
        let nnodes = node.as_ref().map_or(1, |n| n.nnodes);
        let b = trainer.config.batch_size;
        if !b.is_multiple_of(world * nnodes) {
            return Err(TrainError::Parallel(format!(
                "the batch size {b} is not a multiple of the {} devices: each device computes \
                 batch_size / devices rows of every micro-batch; choose a batch size divisible \
                 by {}",
                world * nnodes,
                world * nnodes
            )));
        }
        realise(&trainer.model);
        let first_sum = param_checksum(&trainer.model);
        let nccl_id = Placement::nccl_id_for(&labels)?;
        let placement = match &node {
            None => Placement {
                nccl_id,
                ..Placement::single()
            },
            Some(spec) => {
                let welcome = Welcome {
                    error: None,
                    devices: world,
                    start_step: trainer.step,
                    checksum: first_sum,
                    nccl_id: nccl_id.clone(),
                };
                let mut link = crate::train::nodes::host(spec, &trainer.config, world, welcome)?;
                if trainer.step == 0 {
                    // A new run: the other nodes take these parameters (a resumed one: the
                    // checkpoint of its step in the run folder).
                    link.broadcast(Some(&param_values(&trainer.model)))?;
                }
                Placement {
                    node_rank: 0,
                    nnodes: spec.nnodes,
                    link: Some(Arc::new(Mutex::new(link))),
                    nccl_id,
                }
            }
        };
        let label = labels.first().cloned().unwrap_or_else(|| "device 0".into());
        let exchange = placement.exchange(0, world, label);
        let locals = Locals::start(
            &trainer.model,
            (&trainer.optim_heads, &trainer.optim_llm),
            &trainer.inputs(),
            &exchange,
            &trainer.device,
            others,
            &labels,
            &placement,
            check_every,
        )?;
        trainer.parallel = Some(Box::new(Parallel {
            exchange,
            layout: Layout::of(&trainer.model),
            locals,
            check_every,
            last_exchange_s: 0.0,
            _b: std::marker::PhantomData,
        }));
        Ok(())
    }
}

impl<B: AutodiffBackend> Parallel<B> {
    fn link(&self) -> Option<std::sync::MutexGuard<'_, NodeLink>> {
        self.exchange
            .link
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<B: AutodiffBackend> StepExchange<B> for Parallel<B> {
    /// How many devices, over every node.
    fn global_world(&self) -> usize {
        self.exchange.global_world
    }

    /// Seconds the last step's gradient average took on the first device (flattening, the
    /// exchange and the waits for the other devices, splitting).
    fn last_exchange_s(&self) -> f64 {
        self.last_exchange_s
    }

    /// Hands `step` to every other device and node.
    fn begin(&mut self, step: usize) -> Result<(), TrainError> {
        if let Some(mut link) = self.link() {
            link.go(Some(step))?;
        }
        self.locals.begin(step)
    }

    /// The first device's side of the average (see [`average`]).
    fn reduce(
        &mut self,
        model: &FlowModel<B>,
        local: Result<LocalGrads, LocalFailure>,
        stage: u8,
        device: &B::Device,
    ) -> Result<LocalGrads, LocalFailure> {
        let started = std::time::Instant::now();
        let out = average(&self.exchange, &self.layout, model, device, stage, local);
        self.last_exchange_s = started.elapsed().as_secs_f64();
        if let Err(LocalFailure::Error(TrainError::Parallel(_))) = &out {
            // A device failed or did not answer: its error is collected here.
            if let Err(e) = self.locals.collect(None, "", "") {
                return Err(LocalFailure::Error(e));
            }
        }
        out
    }

    /// After the first device's update: every other device's answer, and (when due) whether
    /// every replica of every node is still the first device's.
    fn finish(&mut self, step: usize, model: &FlowModel<B>) -> Result<(), TrainError> {
        let due = self.check_every > 0 && (step + 1).is_multiple_of(self.check_every);
        let first = due.then(|| param_checksum(model));
        let label = self.exchange.label.clone();
        self.locals
            .collect(first, &label, &format!("after step {step}"))?;
        if let (Some(sum), Some(mut link)) = (first, self.link()) {
            link.check(sum, step)?;
        }
        Ok(())
    }
}

impl<B: AutodiffBackend> Drop for Parallel<B> {
    fn drop(&mut self) {
        if let Some(mut link) = self.link() {
            let _ = link.go(None);
        }
        if !self.locals.broken {
            self.exchange.finish::<Inner<B>>();
        }
    }
}

/// Every float parameter's values in module order.
fn param_values<B: Backend, M: Module<B>>(module: &M) -> Vec<f32> {
    let mut all = Vec::new();
    each_param(module, |values| all.extend(values));
    all
}

pub mod follow;
mod layout;
#[cfg(test)]
mod tests;
pub mod timing;
