//! [`FusedKernels`] for burn's CPU backend: inputs made contiguous (a copy only for strided
//! views), kernels run on the f32 slices, outputs wrapped without a copy.

use burn::backend::Flex;
use burn::tensor::{Bytes, DType};
use burn_flex::{FlexTensor, Layout};

use super::{CpuOp, FusedKernels, In, Out};

/// `t` itself when its elements are one contiguous run in row-major order (at any offset of
/// a larger buffer: the q/k/v slices of a fused projection, a prefix view); else a copy.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The elements of a [`contiguous`] tensor.
fn view(t: &FlexTensor) -> In<'_> {
    let (start, n) = (t.layout().start_offset(), t.layout().num_elements());
    In {
        data: &t.storage::<f32>()[start..start + n],
        shape: t.layout().shape(),
    }
}

fn wrap(out: Out) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(out.data),
        Layout::contiguous(out.shape.into()),
        DType::F32,
    )
}

impl FusedKernels for Flex {
    fn fused_forward<O: CpuOp<N>, const N: usize>(
        op: &O,
        inputs: [FlexTensor; N],
        train: bool,
    ) -> (FlexTensor, Option<FlexTensor>) {
        let inputs = inputs.map(contiguous);
        let (out, aux) = op.forward(std::array::from_fn(|i| view(&inputs[i])), train);
        (wrap(out), aux.map(wrap))
    }

    fn fused_backward<O: CpuOp<N>, const N: usize>(
        op: &O,
        inputs: [FlexTensor; N],
        output: Option<FlexTensor>,
        aux: Option<FlexTensor>,
        grad: FlexTensor,
        wanted: [bool; N],
    ) -> [Option<FlexTensor>; N] {
        let inputs = inputs.map(contiguous);
        let output = output.map(contiguous);
        let aux = aux.map(contiguous);
        let grad = contiguous(grad);
        op.backward(
            std::array::from_fn(|i| view(&inputs[i])),
            output.as_ref().map(view),
            aux.as_ref().map(view),
            view(&grad),
            wanted,
        )
        .map(|g| g.map(wrap))
    }
}
