//! Fused CPU kernels: operations that burn's flex backend runs as chains of elementwise ops,
//! layout copies and broadcasts (a normalisation, an activation, an attention, a depthwise
//! convolution), written once as a forward and a backward pass over contiguous f32 buffers.
//!
//! This is burn's backend-extension pattern: [`FusedBackend`] is implemented for the CPU backend
//! (`Flex`, through [`FusedKernels`]) and for `Autodiff` of it, where each fused op is one node
//! of the graph with its own backward. Model code stays generic over `Backend`: the entry
//! functions in [`ops`] take the fused path when the backend is `Flex` or `Autodiff<Flex>` and the
//! tensors are f32, and the composed burn version (the reference of every test) otherwise: on
//! CUDA, for other dtypes, and with `FLOWLENS_FUSED=0` in the environment (for measuring what
//! the kernels buy, docs/PERFORMANCE.md).
//!
//! Kernels are deterministic: work is split over rows, heads or samples whose results do not
//! depend on each other, and every reduction across them (a weight gradient summed over the
//! batch) adds per-chunk partials in a fixed order, whatever the number of threads.

mod autodiff;
mod flex;
pub mod gemm;
pub mod math;
pub mod ops;
pub mod par;
pub mod simd;
#[cfg(test)]
mod tests;

use std::any::{Any, TypeId};
use std::fmt::Debug;
use std::sync::OnceLock;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// A contiguous f32 input of a kernel.
#[derive(Clone, Copy)]
pub struct In<'a> {
    pub data: &'a [f32],
    pub shape: &'a [usize],
}

/// A kernel's output buffer with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Out {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
}

impl Out {
    pub fn new(data: Vec<f32>, shape: Vec<usize>) -> Self {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Self { data, shape }
    }

    pub fn view(&self) -> In<'_> {
        In {
            data: &self.data,
            shape: &self.shape,
        }
    }
}

/// One fused operation of `N` tensor inputs and one output, on the CPU.
pub trait CpuOp<const N: usize>: Clone + Send + Sync + Debug + 'static {
    /// Whether [`CpuOp::backward`] reads the forward output (kept for it only then).
    const SAVES_OUTPUT: bool = false;

    /// The output, and what the backward pass needs beyond inputs and output (`train`: a
    /// backward pass will follow; without it an op may skip saving).
    fn forward(&self, inputs: [In<'_>; N], train: bool) -> (Out, Option<Out>);

    /// Gradients of the inputs marked in `wanted`, from the output gradient `grad`.
    fn backward(
        &self,
        inputs: [In<'_>; N],
        output: Option<In<'_>>,
        aux: Option<In<'_>>,
        grad: In<'_>,
        wanted: [bool; N],
    ) -> [Option<Out>; N];
}

/// The kernels' side of the extension: a backend that can run a [`CpuOp`] forward (keeping
/// what its backward needs) and backward. Implemented for `Flex`.
pub trait FusedKernels: Backend {
    fn fused_forward<O: CpuOp<N>, const N: usize>(
        op: &O,
        inputs: [FloatTensor<Self>; N],
        train: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>);

    fn fused_backward<O: CpuOp<N>, const N: usize>(
        op: &O,
        inputs: [FloatTensor<Self>; N],
        output: Option<FloatTensor<Self>>,
        aux: Option<FloatTensor<Self>>,
        grad: FloatTensor<Self>,
        wanted: [bool; N],
    ) -> [Option<FloatTensor<Self>>; N];
}

/// A backend with fused operations: `Flex` (forward only) and `Autodiff` of a [`FusedKernels`]
/// backend (one graph node per op, with the op's own backward).
pub trait FusedBackend: Backend {
    fn fused<O: CpuOp<N>, const N: usize>(
        op: O,
        inputs: [FloatTensor<Self>; N],
    ) -> FloatTensor<Self>;
}

impl FusedBackend for Flex {
    fn fused<O: CpuOp<N>, const N: usize>(
        op: O,
        inputs: [FloatTensor<Self>; N],
    ) -> FloatTensor<Self> {
        Flex::fused_forward(&op, inputs, false).0
    }
}

/// Whether the fused kernels serve backend `B` (`Flex` or `Autodiff<Flex>`, unless
/// `FLOWLENS_FUSED=0`).
pub fn available<B: Backend>() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    let enabled = *ENABLED.get_or_init(|| std::env::var("FLOWLENS_FUSED").as_deref() != Ok("0"));
    enabled && (is::<B, Flex>() || is::<B, Autodiff<Flex>>())
}

fn is<B: 'static, T: 'static>() -> bool {
    TypeId::of::<B>() == TypeId::of::<T>()
}

/// `value` as type `U`, which it is (checked by the caller through [`is`]).
fn cast<T: 'static, U: 'static>(value: T) -> U {
    *(Box::new(value) as Box<dyn Any>)
        .downcast::<U>()
        .expect("fused dispatch: the backend type was checked")
}

fn cast_all<T: 'static, U: 'static, const N: usize>(values: [T; N]) -> [U; N] {
    values.map(cast)
}

/// A tensor of any rank as a kernel input.
pub trait Input<B: Backend> {
    fn dtype(&self) -> DType;
    fn primitive(&self) -> FloatTensor<B>;
}

impl<B: Backend, const D: usize> Input<B> for Tensor<B, D> {
    fn dtype(&self) -> DType {
        Tensor::dtype(self)
    }

    fn primitive(&self) -> FloatTensor<B> {
        prim(self)
    }
}

/// Runs `op` on `inputs` through the fused path when [`available`] for `B` and every input is
/// f32; `None` otherwise (the caller then runs the composed version).
pub fn run<B: Backend, O: CpuOp<N>, const N: usize, const D: usize>(
    op: O,
    inputs: [&dyn Input<B>; N],
) -> Option<Tensor<B, D>> {
    if !available::<B>() || inputs.iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    let inputs: [FloatTensor<B>; N] = inputs.map(|t| t.primitive());
    let out: FloatTensor<B> = if is::<B, Flex>() {
        cast(Flex::fused(op, cast_all::<_, FloatTensor<Flex>, N>(inputs)))
    } else {
        cast(Autodiff::<Flex>::fused(
            op,
            cast_all::<_, FloatTensor<Autodiff<Flex>>, N>(inputs),
        ))
    };
    Some(tensor(out))
}

/// The float primitive of a tensor.
pub fn prim<B: Backend, const D: usize>(t: &Tensor<B, D>) -> FloatTensor<B> {
    t.clone().into_primitive().tensor()
}

/// A tensor of rank `D` from a float primitive.
pub fn tensor<B: Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// Splits `0..n` into chunks of `chunk` (the last shorter); the unit of parallel work and of
/// ordered partial sums.
pub fn chunks(n: usize, chunk: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let chunk = chunk.max(1);
    (0..n.div_ceil(chunk)).map(move |i| i * chunk..((i + 1) * chunk).min(n))
}

/// Rows per parallel task so that a task handles at least `min_elems` elements.
pub fn rows_per_task(rows: usize, width: usize, min_elems: usize) -> usize {
    (min_elems / width.max(1)).clamp(1, rows.max(1))
}
