//! The optimiser's side of a step: AdamW, global gradient-norm statistics and clipping, and the
//! EMA update of the weights, as module visitors and mappers over parameter ids.

use std::collections::HashMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};

use crate::flow::FlowModel;

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
pub(crate) type Optim<B> = OptimizerAdaptor<AdamW, FlowModel<B>, B>;

/// AdamW (0.9, 0.95), epsilon 1e-8, no weight decay.
pub(crate) fn adamw<B: AutodiffBackend>() -> Optim<B> {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.95)
        .with_epsilon(1e-8)
        .with_weight_decay(0.0)
        .init()
}
