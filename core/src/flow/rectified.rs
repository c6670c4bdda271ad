//! Rectified flow (Liu et al. 2022; the paper's 5.1; MODEL.md 7.2): `z_t = t x + (1 - t) z0`,
//! velocity target `x - z0`, logit-normal `t` (SD3), text dropout in the CFG-row form, and the
//! Euler sampler from `t = 0` (noise) to `t = 1` (data) with classifier-free guidance
//! `v = w v_c - (w - 1) v_u`, handing each solver step's pooled taps to a sink.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;

use super::model::{FlowInputError, FlowModel, FlowOutput, unconditional_rows};
use super::taps::{TapPooling, TapRequest};

/// `z_t = t x + (1 - t) z0` for `x`, `z0` `[b, C, H, W]` and `t [b]`.
pub fn interpolate<B: Backend>(
    x: &Tensor<B, 4>,
    z0: &Tensor<B, 4>,
    t: &Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let t = t
        .clone()
        .reshape([b, 1, 1, 1])
        .repeat_dim(1, c)
        .repeat_dim(2, h)
        .repeat_dim(3, w);
    x.clone() * t.clone() + z0.clone() * (t.neg() + 1.0)
}

/// Replaces a fraction `p` of the rows with unconditional CFG rows (BOS kept, the rest padded
/// and masked): the same form as at sampling time (MODEL.md AMBIG-5). Returns the new ids, mask
/// and which rows were dropped.
pub fn text_dropout<B: Backend>(
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    p: f64,
    pad_id: u32,
    rng: &mut impl Rng,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Vec<bool>) {
    let b = ids.dims()[0];
    let dropped: Vec<bool> = (0..b).map(|_| rng.random_bool(p)).collect();
    let (ids, mask) = drop_rows(ids, mask, &dropped, pad_id);
    (ids, mask, dropped)
}

/// Replaces the rows where `dropped` is true with unconditional CFG rows.
pub fn drop_rows<B: Backend>(
    ids: Tensor<B, 2, Int>,
    mask: Tensor<B, 2, Int>,
    dropped: &[bool],
    pad_id: u32,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let [b, t] = ids.dims();
    if !dropped.iter().any(|&d| d) {
        return (ids, mask);
    }
    let (u_ids, u_mask) = unconditional_rows(&ids, pad_id);
    let device = ids.device();
    let keep = Tensor::<B, 2, Int>::from_data(
        TensorData::new(
            dropped.iter().map(|&d| i64::from(!d)).collect::<Vec<_>>(),
            [b, 1],
        ),
        &device,
    )
    .repeat_dim(1, t);
    let drop = keep.clone().neg() + 1;
    (
        ids * keep.clone() + u_ids * drop.clone(),
        mask * keep + u_mask * drop,
    )
}

/// Mean squared error between predicted and target velocities (averaged over every element).
pub fn velocity_loss<B: Backend>(pred: Tensor<B, 4>, target: Tensor<B, 4>) -> Tensor<B, 1> {
    (pred - target).square().mean()
}

/// Anything that predicts a velocity with taps (the flow model; tests use analytic fields).
pub trait VelocityField<B: Backend> {
    fn velocity(
        &self,
        z: Tensor<B, 4>,
        t: Tensor<B, 1>,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        taps: &TapRequest,
    ) -> Result<FlowOutput<B>, FlowInputError>;
}

impl<B: Backend> VelocityField<B> for FlowModel<B> {
    fn velocity(
        &self,
        z: Tensor<B, 4>,
        t: Tensor<B, 1>,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        taps: &TapRequest,
    ) -> Result<FlowOutput<B>, FlowInputError> {
        self.forward(z, t, ids, mask, taps)
    }
}

/// Receives each solver step's pooled taps of the conditional branch, `[b, width]` per name.
pub trait StepSink<B: Backend> {
    /// `step` in `0..steps`, at time `t = step / steps` (the velocity evaluated at that step).
    fn on_step(&mut self, step: usize, t: f32, taps: BTreeMap<String, Tensor<B, 2>>);

    /// The state `z_t` at the start of solver step `step` (before its update), for previews.
    fn on_state(&mut self, _step: usize, _t: f32, _z: &Tensor<B, 4>) {}
}

/// A sink that keeps nothing.
pub struct NoSink;

impl<B: Backend> StepSink<B> for NoSink {
    fn on_step(&mut self, _: usize, _: f32, _: BTreeMap<String, Tensor<B, 2>>) {}
}

/// Sampler settings (MODEL.md 7.4: Euler, 30 steps, w = 2, no timestep shift).
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub steps: usize,
    pub cfg: f32,
    pub pooling: TapPooling,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            steps: 30,
            cfg: 2.0,
            pooling: TapPooling::Mean,
        }
    }
}

/// Sampler settings that cannot sample.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    #[error("the sampler needs at least one Euler step")]
    NoSteps,
    #[error("the guidance scale (--cfg) must be a finite number, not {0}")]
    Guidance(f32),
}

impl SamplerConfig {
    pub fn check(&self) -> Result<(), SamplerError> {
        if self.steps == 0 {
            return Err(SamplerError::NoSteps);
        }
        if !self.cfg.is_finite() {
            return Err(SamplerError::Guidance(self.cfg));
        }
        Ok(())
    }
}

/// A batch's text rows: token ids and mask `[b, T]`, and the tokenizer's pad id (the
/// unconditional CFG rows are built with it).
#[derive(Debug, Clone)]
pub struct TextBatch<B: Backend> {
    pub ids: Tensor<B, 2, Int>,
    pub mask: Tensor<B, 2, Int>,
    pub pad_id: u32,
}

/// Euler integration from `z0` at `t = 0` to `t = 1` in `steps` steps (`t_k = k / steps`), with
/// classifier-free guidance when `cfg != 1` (conditional and unconditional rows in one batch).
pub fn sample_euler<B: Backend>(
    field: &impl VelocityField<B>,
    z0: Tensor<B, 4>,
    text: TextBatch<B>,
    config: &SamplerConfig,
    taps: &TapRequest,
    sink: &mut impl StepSink<B>,
) -> Result<Tensor<B, 4>, FlowInputError> {
    let b = z0.dims()[0];
    let device = z0.device();
    let guided = config.cfg != 1.0;
    let TextBatch { ids, mask, pad_id } = text;
    let (ids, mask) = if guided {
        let (u_ids, u_mask) = unconditional_rows(&ids, pad_id);
        (
            Tensor::cat(vec![ids, u_ids], 0),
            Tensor::cat(vec![mask, u_mask], 0),
        )
    } else {
        (ids, mask)
    };
    let dt = 1.0 / config.steps as f32;
    // Taps of the conditional rows, pooled as the forward makes them.
    let taps = taps.pooled_at_once(config.pooling, b);
    let taps = &taps;
    let mut z = z0;
    for k in 0..config.steps {
        let t_k = k as f32 * dt;
        let rows = if guided { 2 * b } else { b };
        let zz = if guided {
            Tensor::cat(vec![z.clone(), z.clone()], 0)
        } else {
            z.clone()
        };
        sink.on_state(k, t_k, &z);
        let t = Tensor::<B, 1>::from_data(TensorData::new(vec![t_k; rows], [rows]), &device);
        let out = field.velocity(zz, t, ids.clone(), mask.clone(), taps)?;
        let v = if guided {
            let v_c = out.velocity.clone().narrow(0, 0, b);
            let v_u = out.velocity.narrow(0, b, b);
            v_c * config.cfg - v_u * (config.cfg - 1.0)
        } else {
            out.velocity
        };
        if !out.pooled.is_empty() {
            sink.on_step(k, t_k, out.pooled);
        }
        z = z + v * dt;
    }
    Ok(z)
}
