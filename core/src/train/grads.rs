//! The optimiser's side of a step: AdamW, global gradient-norm statistics and clipping, and the
//! EMA update of the weights, as module visitors and mappers over parameter ids.

use std::collections::HashMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, GradientsParams, LearningRate,
    SimpleOptimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};

use crate::flow::FlowModel;
use crate::nn::fused::ops::adamw::AdamStep;
use crate::nn::fused::run;

/// The model's trainable float parameters by id, as inner-backend primitives.
pub(crate) struct Collect<B: AutodiffBackend> {
    pub(crate) values: HashMap<ParamId, TensorPrimitive<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // Frozen parameters keep their EMA exactly (decay x + (1 - decay) x is not always x
        // in floating point).
        if !param.is_require_grad() {
            return;
        }
        self.values
            .insert(param.id, param.val().inner().into_primitive());
    }
}

/// `ema = decay ema + (1 - decay) current`, parameter by parameter.
pub(crate) struct EmaUpdate<B: Backend> {
    pub(crate) current: HashMap<ParamId, TensorPrimitive<B>>,
    pub(crate) decay: f64,
}

impl<B: Backend> ModuleMapper<B> for EmaUpdate<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let updated = match self.current.remove(&id) {
            Some(cur) => {
                crate::nn::fused::ops::ema::ema(tensor, Tensor::from_primitive(cur), self.decay)
            }
            None => tensor,
        };
        Param::from_mapped_value(id, updated, mapper)
    }
}

/// Sum of squared gradients over the given parameter ids, and the first id whose gradient is
/// not finite.
pub(crate) struct GradStats<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    pub(crate) sum_sq: f64,
    pub(crate) non_finite: Option<ParamId>,
    _b: std::marker::PhantomData<B>,
}

impl<'a, B: AutodiffBackend> GradStats<'a, B> {
    pub(crate) fn new(grads: &'a GradientsParams) -> Self {
        Self {
            grads,
            sum_sq: 0.0,
            non_finite: None,
            _b: std::marker::PhantomData,
        }
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradStats<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s: f64 = g.square().sum().into_scalar().elem();
            if !s.is_finite() && self.non_finite.is_none() {
                self.non_finite = Some(param.id);
            }
            self.sum_sq += s;
        }
    }
}

/// Scales every gradient by `factor`.
pub(crate) struct ScaleGrads<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<'a, B: AutodiffBackend> ScaleGrads<'a, B> {
    pub(crate) fn new(grads: &'a mut GradientsParams, factor: f64) -> Self {
        Self {
            grads,
            factor,
            _b: std::marker::PhantomData,
        }
    }
}

impl<B: AutodiffBackend> ModuleVisitor<B> for ScaleGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, g * self.factor);
        }
    }
}

/// The optimiser of the heads and, separately, of the LLM.
pub type Optim<B> = OptimizerAdaptor<FusedAdamW, FlowModel<B>, B>;

const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.95;
const EPSILON: f32 = 1e-8;

/// AdamW (0.9, 0.95), epsilon 1e-8, no weight decay.
pub(crate) fn adamw<B: AutodiffBackend>() -> Optim<B> {
    OptimizerAdaptor::from(FusedAdamW::new())
}

/// burn-optim's `AdamW` with its step in one fused pass on the CPU (`nn::fused::ops::adamw`),
/// bit for bit the same values, and the same state (`AdamWState`), so checkpoints written by
/// either load into the other. Other backends run burn's own step.
#[derive(Clone)]
pub struct FusedAdamW {
    burn: AdamW,
}

impl FusedAdamW {
    pub(crate) fn new() -> Self {
        let burn = AdamWConfig::new()
            .with_beta_1(BETA_1)
            .with_beta_2(BETA_2)
            .with_epsilon(EPSILON)
            .with_weight_decay(0.0)
            .build();
        Self { burn }
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        if !crate::nn::fused::available::<B>() {
            return self.burn.step(lr, tensor, grad, state);
        }
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let flat = |t: Tensor<B, D>| t.reshape([n]);
        let time = state.as_ref().map_or(1, |s| s.momentum.time + 1);
        let op = AdamStep {
            beta_1: BETA_1,
            beta_2: BETA_2,
            factor_1: 1.0 - BETA_1,
            factor_2: 1.0 - BETA_2,
            correction_1: 1f32 - BETA_1.powi(time as i32),
            correction_2: 1f32 - BETA_2.powi(time as i32),
            epsilon: EPSILON,
            lr: lr as f32,
            first: state.is_none(),
        };
        let (p, g) = (flat(tensor), flat(grad));
        let (m, v) = match state {
            Some(s) => (flat(s.momentum.moment_1), flat(s.momentum.moment_2)),
            None => (g.clone(), g.clone()),
        };
        let out: Tensor<B, 2> = run(op, [&p, &g, &m, &v]).expect("the fused path is available");
        let row = |k: usize| out.clone().slice([k..k + 1, 0..n]).reshape(dims);
        let momentum = AdaptiveMomentumState {
            time,
            moment_1: row(1),
            moment_2: row(2),
            max_moment_2: None,
        };
        (row(0), Some(AdamWState { momentum }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::TensorData;

    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = ((i as u64 + 1) * 0x9e37_79b9 + seed * 0x85eb_ca6b) % 10_007;
                (x as f32 / 10_007.0 - 0.5) * scale
            })
            .collect()
    }

    #[test]
    fn the_fused_adamw_step_is_burns_bit_for_bit() {
        let device = Default::default();
        let shape = [37, 1200];
        let n = 37 * 1200;
        let tensor = |seed, scale| {
            Tensor::<Flex, 2>::from_data(TensorData::new(values(n, seed, scale), shape), &device)
        };
        let bits = |t: &Tensor<Flex, 2>| -> Vec<u32> {
            let v: Vec<f32> = t.to_data().to_vec().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        let fused = FusedAdamW::new();
        let (mut p1, mut p2) = (tensor(1, 2.0), tensor(1, 2.0));
        let (mut s1, mut s2) = (None, None);
        for step in 0..4u64 {
            // Gradients with zeros and tiny values too.
            let g = tensor(10 + step, if step == 2 { 1e-6 } else { 3.0 });
            let lr = 1e-3 * (step + 1) as f64;
            let (a, sa) = SimpleOptimizer::<Flex>::step(&fused.burn, lr, p1, g.clone(), s1);
            let (b, sb) = SimpleOptimizer::<Flex>::step(&fused, lr, p2, g, s2);
            assert_eq!(bits(&a), bits(&b), "parameters after step {step}");
            let (ma, mb) = (sa.as_ref().unwrap(), sb.as_ref().unwrap());
            assert_eq!(ma.momentum.time, mb.momentum.time);
            assert_eq!(bits(&ma.momentum.moment_1), bits(&mb.momentum.moment_1));
            assert_eq!(bits(&ma.momentum.moment_2), bits(&mb.momentum.moment_2));
            (p1, p2, s1, s2) = (a, b, sa, sb);
        }
    }
}
