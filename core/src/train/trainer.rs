//! One optimisation step of rectified-flow training (MODEL.md 7): velocity MSE on
//! `z_t = t x + (1 - t) z0` with logit-normal `t`, text dropout in the CFG-row form, stage 1
//! without LLM updates, gradient accumulation, global gradient-norm clipping, AdamW for the heads
//! and (stage 2) the LLM, and the EMA update. Every step draws its randomness from a generator
//! seeded by (seed, step, item) and its data by position in the seed's data order, so a resumed
//! run repeats it exactly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::checkpoint::Best;
use crate::data::DataSource;
use crate::flow::rectified::{drop_rows, interpolate, velocity_loss};
use crate::flow::{FlowConfig, FlowModel, TapRequest};
use crate::latent_cache::LatentCache;
use crate::nn::precision::{Precision, compute_in_bf16};
use crate::noise::{logit_normal, normal_values};
use crate::run::{RunDir, StepRecord};
use crate::tokenizer::{LlamaTokenizer, PaddingSide};
use crate::train::config::TrainConfig;
use crate::train::error::TrainError;
use crate::train::grads::{Collect, EmaUpdate, GradStats, Optim, ScaleGrads};

/// Where a training run stands.
pub struct Trainer<B: AutodiffBackend> {
    pub config: TrainConfig,
    pub flow: FlowConfig,
    pub model: FlowModel<B>,
    pub ema: FlowModel<B::InnerBackend>,
    /// The second EMA (`ema_decay_2`).
    pub ema2: Option<FlowModel<B::InnerBackend>>,
    pub(crate) optim_heads: Optim<B>,
    pub(crate) optim_llm: Optim<B>,
    pub step: usize,
    pub tokenizer: Arc<LlamaTokenizer>,
    /// The encoded training data.
    pub data: Arc<LatentCache>,
    /// The order in which the data is visited (per training seed).
    pub(crate) order: Arc<DataOrder>,
    pub(crate) run: RunDir,
    pub(crate) device: B::Device,
    /// Best checkpoint so far.
    pub(crate) best: Option<Best>,
    /// Losses since the last checkpoint.
    pub(crate) window: Vec<f32>,
    /// The other devices of a data-parallel run (`None`: this device alone): `train::parallel`.
    pub(crate) parallel: Option<Box<dyn StepExchange<B>>>,
    /// The run's writer lock, held as long as the trainer lives.
    pub(crate) _lock: crate::run::RunLock,
}

/// The data items at global positions `positions` of a run with training seed `seed` over `n`
/// items: position `p` is item `order_e[p % n]` of epoch `e = p / n`, each epoch's order a
/// Fisher-Yates shuffle seeded by (seed, epoch). Every item once per epoch; the same seed gives
/// the same order (exact resume), another seed another one.
pub fn data_order(seed: u64, n: usize, positions: std::ops::Range<usize>) -> Vec<usize> {
    DataOrder::new(seed, n).items(positions)
}

/// One epoch's order of [`data_order`].
fn epoch_order(seed: u64, n: usize, epoch: usize) -> Vec<usize> {
    let key = (epoch as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ key);
    let mut order: Vec<usize> = (0..n).collect();
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
    order
}

/// [`data_order`] with each epoch's shuffle computed once and kept while it is in use (the
/// current epoch and the one before: a batch may straddle the two), so a training step does
/// not shuffle the whole data set again.
pub(crate) struct DataOrder {
    seed: u64,
    n: usize,
    epochs: std::sync::Mutex<Vec<(usize, std::sync::Arc<Vec<usize>>)>>,
}

impl DataOrder {
    pub(crate) fn new(seed: u64, n: usize) -> Self {
        Self {
            seed,
            n,
            epochs: Default::default(),
        }
    }

    fn epoch(&self, epoch: usize) -> std::sync::Arc<Vec<usize>> {
        let mut kept = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, o)) = kept.iter().find(|(e, _)| *e == epoch) {
            return o.clone();
        }
        let order = std::sync::Arc::new(epoch_order(self.seed, self.n, epoch));
        kept.retain(|(e, _)| e + 1 >= epoch);
        kept.push((epoch, order.clone()));
        order
    }

    pub(crate) fn items(&self, positions: std::ops::Range<usize>) -> Vec<usize> {
        let n = self.n;
        let mut current: Option<(usize, std::sync::Arc<Vec<usize>>)> = None;
        positions
            .map(|p| {
                let e = p / n;
                if current.as_ref().is_none_or(|(c, _)| *c != e) {
                    current = Some((e, self.epoch(e)));
                }
                current.as_ref().expect("set above").1[p % n]
            })
            .collect()
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// What a step reads besides the model (shared with the replicas of a data-parallel run).
    pub(crate) fn inputs(&self) -> StepInputs {
        StepInputs {
            config: self.config.clone(),
            text_len: self.flow.text_len,
            tokenizer: self.tokenizer.clone(),
            data: self.data.clone(),
            order: self.order.clone(),
        }
    }

    /// One optimisation step (`grad_accum` micro-batches; on a data-parallel run each device
    /// computes its share of every micro-batch and the gradients are averaged before clipping).
    pub fn train_step(&mut self) -> Result<StepRecord, TrainError> {
        let start = Instant::now();
        let step = self.step;
        let stage = self.config.stage(step);
        let inputs = self.inputs();
        let world = self.parallel.as_ref().map_or(1, |p| p.global_world());
        let shard = shard_of(self.config.batch_size, 0, world);
        let local = match self.parallel.as_mut() {
            Some(p) => {
                p.begin(step)?;
                let local = inputs.local_grads(&self.model, step, stage, shard, &self.device);
                p.reduce(&self.model, local, stage, &self.device)
            }
            None => inputs.local_grads(&self.model, step, stage, shard, &self.device),
        };
        let local = match local {
            Ok(l) => l,
            Err(LocalFailure::NonFinite { loss, first }) => {
                return Err(self.diagnose(step, loss, first));
            }
            Err(LocalFailure::Error(e)) => return Err(e),
        };
        let loss_value = local.loss_sum / self.config.grad_accum as f32;
        if !loss_value.is_finite() {
            return Err(self.diagnose(step, loss_value, "the loss".into()));
        }
        let (model, grad_norm, lr) = apply_grads(
            &self.config,
            step,
            self.model.clone(),
            &mut self.optim_heads,
            &mut self.optim_llm,
            local,
        )
        .map_err(|id| self.diagnose(step, loss_value, format!("the gradient of parameter {id}")))?;
        self.model = model;
        let mut collect = Collect::<B> {
            values: HashMap::new(),
        };
        self.model.visit(&mut collect);
        if let (Some(ema2), Some(decay)) = (self.ema2.take(), self.config.ema_decay_2) {
            self.ema2 = Some(ema2.map(&mut EmaUpdate {
                current: collect.values.clone(),
                decay,
            }));
        }
        self.ema = self.ema.clone().map(&mut EmaUpdate {
            current: collect.values,
            decay: self.config.ema_decay,
        });
        if let Some(p) = self.parallel.as_mut() {
            p.finish(step, &self.model)?;
        }
        self.step += 1;
        self.window.push(loss_value);
        let samples = self.config.batch_size * self.config.grad_accum;
        Ok(StepRecord {
            step,
            loss: loss_value as f64,
            lr,
            grad_norm,
            samples_per_s: samples as f64 / start.elapsed().as_secs_f64(),
            stage,
            exchange_s: self.parallel.as_ref().map(|p| p.last_exchange_s()),
        })
    }

    fn diagnose(&self, step: usize, loss: f32, first: String) -> TrainError {
        let path = self.run.path("nan_diagnosis.json");
        let _ = crate::fsutil::write_atomic(
            &path,
            json!({"step": step, "loss": loss.to_string(), "first_non_finite": first})
                .to_string()
                .as_bytes(),
        );
        TrainError::NonFinite {
            step,
            loss,
            first,
            diagnosis: path,
        }
    }

    /// Held-out shapes scenes for evaluation (a data seed training never uses), when the run
    /// trains on the shapes set.
    pub fn held_out_scenes(&self, n: usize) -> Option<Vec<crate::data::Scene>> {
        match self.config.data {
            DataSource::Shapes { seed, .. } => {
                let held_out = crate::data::ShapesDataset::held_out(seed, n);
                Some((0..n).map(|i| held_out.scene(i)).collect())
            }
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// A step's view of the other devices of a data-parallel run (implemented by
/// `train::parallel::Parallel`).
pub(crate) trait StepExchange<B: AutodiffBackend> {
    /// How many devices over every node.
    fn global_world(&self) -> usize;
    /// Seconds the last average took on this device.
    fn last_exchange_s(&self) -> f64;
    /// Hands `step` to every other device and node.
    fn begin(&mut self, step: usize) -> Result<(), TrainError>;
    /// This device's gradients averaged over every device.
    fn reduce(
        &mut self,
        model: &FlowModel<B>,
        local: Result<LocalGrads, LocalFailure>,
        stage: u8,
        device: &B::Device,
    ) -> Result<LocalGrads, LocalFailure>;
    /// After this device's update: the others' answers and, when due, the replica check.
    fn finish(&mut self, step: usize, model: &FlowModel<B>) -> Result<(), TrainError>;
}

/// Rows `rank * b / world .. (rank + 1) * b / world` of a micro-batch of `b` items: the share of
/// device `rank` of a data-parallel run (the whole batch on one device).
pub(crate) fn shard_of(b: usize, rank: usize, world: usize) -> std::ops::Range<usize> {
    let per = b / world.max(1);
    rank * per..(rank + 1) * per
}

/// What a training step reads besides the model: the recipe, the data in the run's order and
/// the tokenizer. Cheap to clone; every replica of a data-parallel run holds one.
#[derive(Clone)]
pub(crate) struct StepInputs {
    pub(crate) config: TrainConfig,
    pub(crate) text_len: usize,
    pub(crate) tokenizer: Arc<LlamaTokenizer>,
    pub(crate) data: Arc<LatentCache>,
    pub(crate) order: Arc<DataOrder>,
}

/// A device's gradients for one step (its share of every micro-batch, summed over the
/// micro-batches, each already divided by their count) and the sum of its micro-batch losses.
pub(crate) struct LocalGrads {
    pub(crate) heads: GradientsParams,
    /// Stage 2 only.
    pub(crate) llm: Option<GradientsParams>,
    pub(crate) loss_sum: f32,
}

/// Why a device has no gradients for a step.
pub(crate) enum LocalFailure {
    /// A micro-batch's loss is not finite (`first`: what went non-finite first).
    NonFinite {
        loss: f32,
        first: String,
    },
    Error(TrainError),
}

impl From<TrainError> for LocalFailure {
    fn from(e: TrainError) -> Self {
        LocalFailure::Error(e)
    }
}

impl StepInputs {
    /// Rows `shard` of micro-batch `micro` of `step`: latents `[rows, c, h, w]` and captions.
    /// The items are positions in the run's data order ([`data_order`]: a shuffle per epoch
    /// seeded by the training seed), so a resumed run sees the same batches, another seed other
    /// ones, and the devices of a data-parallel run the same items as one device would.
    fn batch<Bk: Backend>(
        &self,
        step: usize,
        micro: usize,
        shard: &std::ops::Range<usize>,
        device: &Bk::Device,
    ) -> (Tensor<Bk, 4>, Vec<String>) {
        let b = self.config.batch_size;
        let first = (step * self.config.grad_accum + micro) * b;
        let indices = self.order.items(first + shard.start..first + shard.end);
        let (latents, captions) = self.data.batch(&indices);
        let [c, h, w] = self.data.meta.shape;
        (
            Tensor::from_data(TensorData::new(latents, [shard.len(), c, h, w]), device),
            captions,
        )
    }

    /// The randomness of item `index` of `step`'s effective batch: text dropout, `t` and the
    /// noise `z0`, from a generator seeded by (seed, step, index). Per item, so a step sees the
    /// same items, times and noise however it is split into micro-batches and devices.
    fn item_randomness(&self, step: usize, index: usize) -> (bool, f32, Vec<f32>) {
        let c = &self.config;
        let key = (step as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add((index as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ key);
        let dropped = rand::Rng::random_bool(&mut rng, c.text_dropout);
        let t = logit_normal(&mut rng, 1, c.t_mean, c.t_std)[0];
        let per: usize = self.data.meta.shape.iter().product();
        let noise = normal_values(&mut rng, per);
        (dropped, t, noise)
    }

    /// The loss of rows `shard` of one micro-batch (not yet divided by the accumulation count).
    fn micro_loss<Bk: AutodiffBackend>(
        &self,
        model: &FlowModel<Bk>,
        step: usize,
        micro: usize,
        stage: u8,
        shard: &std::ops::Range<usize>,
        device: &Bk::Device,
    ) -> Result<(Tensor<Bk, 1>, f32), LocalFailure> {
        let (x, captions) = self.batch::<Bk>(step, micro, shard, device);
        let (b, tl) = (shard.len(), self.text_len);
        let tokens = self
            .tokenizer
            .encode_batch(&captions, Some(tl), PaddingSide::Right)
            .map_err(TrainError::from)?;
        let ids = Tensor::<Bk, 2, Int>::from_data(TensorData::new(tokens.ids, [b, tl]), device);
        let mask = Tensor::<Bk, 2, Int>::from_data(TensorData::new(tokens.mask, [b, tl]), device);
        let (mut dropped, mut times, mut noise) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..b {
            let index = micro * self.config.batch_size + shard.start + i;
            let (d, t, z) = self.item_randomness(step, index);
            dropped.push(d);
            times.push(t);
            noise.extend(z);
        }
        let (ids, mask) = drop_rows(ids, mask, &dropped, self.tokenizer.pad_id);
        let t = Tensor::<Bk, 1>::from_data(TensorData::new(times, [b]), device);
        let z0 = Tensor::<Bk, 4>::from_data(TensorData::new(noise, x.dims()), device);
        let zt = interpolate(&x, &z0, &t);
        let target = x - z0;
        // Stage 1 does not update the LLM: no gradients for its weights (gradients still flow
        // through it to the encoder).
        let model = if stage == 1 {
            model.clone().freeze_llm()
        } else {
            model.clone()
        };
        let out = model
            .forward(zt, t, ids, mask, &TapRequest::none())
            .map_err(TrainError::from)?;
        let loss = velocity_loss(out.velocity.clone(), target);
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            let velocity_sum: f64 = out.velocity.abs().sum().into_scalar().elem();
            let first = if velocity_sum.is_finite() {
                "the loss (the predicted velocity is finite)".to_string()
            } else {
                "the predicted velocity".to_string()
            };
            return Err(LocalFailure::NonFinite {
                loss: loss_value,
                first,
            });
        }
        Ok((loss, loss_value))
    }

    /// The gradients of rows `shard` of every micro-batch of `step`.
    pub(crate) fn local_grads<Bk: AutodiffBackend>(
        &self,
        model: &FlowModel<Bk>,
        step: usize,
        stage: u8,
        shard: std::ops::Range<usize>,
        device: &Bk::Device,
    ) -> Result<LocalGrads, LocalFailure> {
        let accum = self.config.grad_accum;
        // Mixed precision: products and attention of this thread's forward passes in bf16.
        let _precision = compute_in_bf16(self.config.precision.bf16_compute());
        let mut heads_acc = GradientsAccumulator::<FlowModel<Bk>>::new();
        let mut llm_acc = GradientsAccumulator::<FlowModel<Bk>>::new();
        let mut loss_sum = 0f32;
        for micro in 0..accum {
            let (loss, value) = self.micro_loss(model, step, micro, stage, &shard, device)?;
            loss_sum += value;
            let loss = if accum > 1 { loss / accum as f32 } else { loss };
            let mut grads = loss.backward();
            let llm_grads = GradientsParams::from_module(&mut grads, &model.llm);
            heads_acc.accumulate(model, GradientsParams::from_grads(grads, model));
            if stage == 2 {
                llm_acc.accumulate(model, llm_grads);
            }
        }
        Ok(LocalGrads {
            heads: heads_acc.grads(),
            llm: (stage == 2).then(|| llm_acc.grads()),
            loss_sum,
        })
    }
}

/// The optimiser's side of a step, the same on every replica: the global gradient norm over
/// the parameters being updated (PyTorch's `clip_grad_norm_`), clipping, AdamW for the heads and
/// (stage 2) the LLM. Returns the new model, the norm before clipping and the heads' learning
/// rate, or the first parameter whose gradient is not finite.
pub(crate) fn apply_grads<B: AutodiffBackend>(
    c: &TrainConfig,
    step: usize,
    model: FlowModel<B>,
    optim_heads: &mut Optim<B>,
    optim_llm: &mut Optim<B>,
    grads: LocalGrads,
) -> Result<(FlowModel<B>, f64, f64), burn::module::ParamId> {
    let LocalGrads {
        heads: mut head_grads,
        llm: mut llm_grads,
        ..
    } = grads;
    let mut stats = GradStats::<B>::new(&head_grads);
    model.visit(&mut stats);
    let (mut sum_sq, mut bad) = (stats.sum_sq, stats.non_finite);
    if let Some(g) = &llm_grads {
        let mut stats = GradStats::<B>::new(g);
        model.llm.visit(&mut stats);
        sum_sq += stats.sum_sq;
        bad = bad.or(stats.non_finite);
    }
    if let Some(id) = bad {
        return Err(id);
    }
    let grad_norm = sum_sq.sqrt();
    if grad_norm > c.grad_clip {
        let factor = c.grad_clip / (grad_norm + 1e-6);
        model.visit(&mut ScaleGrads::<B>::new(&mut head_grads, factor));
        if let Some(g) = llm_grads.as_mut() {
            model.llm.visit(&mut ScaleGrads::<B>::new(g, factor));
        }
    }
    let lr = c.lr_at(step, c.lr);
    let llm_lr = c.lr_at(step, c.llm_lr.unwrap_or(c.lr));
    let mut model = optim_heads.step(lr, model, head_grads);
    if let Some(g) = llm_grads {
        model = optim_llm.step(llm_lr, model, g);
    }
    if c.precision == Precision::Bf16 {
        model = model.map(&mut RoundToBf16);
    }
    Ok((model, grad_norm, lr))
}

/// Rounds every trainable weight to the nearest bf16 value (`--precision bf16`).
struct RoundToBf16;

impl<B: AutodiffBackend> burn::module::ModuleMapper<B> for RoundToBf16 {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<B, D>>,
    ) -> burn::module::Param<Tensor<B, D>> {
        if !param.is_require_grad() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let inner = crate::nn::precision::round_to_bf16(tensor.inner());
        let rounded = Tensor::<B, D>::from_inner(inner).require_grad();
        burn::module::Param::from_mapped_value(id, rounded, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::data_order;

    #[test]
    fn each_epoch_visits_every_item_once_and_the_seed_changes_the_order() {
        let n = 10;
        let a = data_order(0, n, 0..30);
        for epoch in a.chunks(n) {
            let mut e = epoch.to_vec();
            e.sort_unstable();
            assert_eq!(e, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(a[..n], a[n..2 * n], "epochs are shuffled anew");
        // Any window of positions reads the same items (batches, resume).
        assert_eq!(data_order(0, n, 7..23), a[7..23]);
        // The trainer's kept order, read batch by batch across epochs, is the same order.
        let kept = super::DataOrder::new(0, n);
        let batches: Vec<usize> = (0..30)
            .step_by(3)
            .flat_map(|p| kept.items(p..p + 3))
            .collect();
        assert_eq!(batches, a);
        let b = data_order(1, n, 0..30);
        assert_ne!(a, b, "another training seed, another data order");
        assert_eq!(data_order(1, n, 0..30), b);
    }
}
