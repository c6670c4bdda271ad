//! The flat gradient buffer's layout: which parameters it holds, in module order, and the
//! visitors that flatten gradients into it and split the average back.

use std::collections::HashSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};

use crate::flow::FlowModel;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// The parameters a step updates: every trainable one outside the LLM (the heads) and, in
/// stage 2, the LLM's, in module order.
pub(super) struct Layout {
    pub(super) llm: HashSet<ParamId>,
}

impl Layout {
    pub(super) fn of<B: AutodiffBackend>(model: &FlowModel<B>) -> Self {
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
pub(super) fn in_part<B: Backend, const D: usize>(
    param: &Param<Tensor<B, D>>,
    llm_ids: &HashSet<ParamId>,
    llm: bool,
) -> bool {
    param.is_require_grad() && llm_ids.contains(&param.id) == llm
}

pub(super) fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// The gradients of one part as flat pieces (zeros where a parameter has none) and which
/// parameters had one.
pub(super) struct Flatten<'a, B: AutodiffBackend> {
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
pub(super) struct Unflatten<'a, B: AutodiffBackend> {
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

/// One part of the buffer (the LLM's parameters, or the others) as flat pieces.
pub(super) fn flatten<B: AutodiffBackend>(
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
pub(super) fn unflatten<B: AutodiffBackend>(
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
