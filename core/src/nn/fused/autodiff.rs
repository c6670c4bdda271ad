//! [`FusedBackend`] for `Autodiff` of a [`FusedKernels`] backend: the fused forward runs on the
//! inner backend and the op is one node of the graph whose backward is the op's own.

use std::marker::PhantomData;

use burn::tensor::ops::FloatTensor;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use super::{CpuOp, FusedBackend, FusedKernels};

/// The graph node of a fused op.
#[derive(Debug)]
struct FusedStep<O>(PhantomData<O>);

/// What the backward pass of one fused op reads: the op, its inputs, and (when the op asks for
/// them) its output and auxiliary buffer.
#[derive(Debug, Clone)]
struct Saved<B: FusedKernels, O, const N: usize> {
    op: O,
    inputs: [FloatTensor<B>; N],
    output: Option<FloatTensor<B>>,
    aux: Option<FloatTensor<B>>,
}

impl<B: FusedKernels, O: CpuOp<N>, const N: usize> Backward<B, N> for FusedStep<O> {
    type State = Saved<B, O, N>;

    fn backward(
        self,
        ops: Ops<Self::State, N>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = std::array::from_fn(|i| ops.parents[i].is_some());
        let Saved {
            op,
            inputs,
            output,
            aux,
        } = ops.state;
        let input_grads = B::fused_backward(&op, inputs, output, aux, grad, wanted);
        for (parent, g) in ops.parents.into_iter().zip(input_grads) {
            if let (Some(node), Some(g)) = (parent, g) {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: FusedKernels, C: CheckpointStrategy> FusedBackend for Autodiff<B, C> {
    fn fused<O: CpuOp<N>, const N: usize>(
        op: O,
        inputs: [FloatTensor<Self>; N],
    ) -> FloatTensor<Self> {
        let nodes = std::array::from_fn(|i| inputs[i].node.clone());
        match FusedStep::<O>(PhantomData)
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let primitives: [FloatTensor<B>; N] =
                    std::array::from_fn(|i| inputs[i].primitive.clone());
                let (output, aux) = B::fused_forward(&op, primitives.clone(), true);
                let saved = Saved {
                    op,
                    inputs: primitives,
                    output: O::SAVES_OUTPUT.then(|| output.clone()),
                    aux,
                };
                prep.finish(saved, output)
            }
            OpsKind::UnTracked(prep) => {
                let primitives = inputs.map(|t| t.primitive);
                prep.finish(B::fused_forward(&op, primitives, false).0)
            }
        }
    }
}
