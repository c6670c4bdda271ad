//! The generation heads' blocks against PyTorch references (tools/fixtures/make_heads_fixtures.py):
//! JanusFlow's ConvNeXt block (GRN, FiLM after the residual) and diffusers' SD3
//! JointTransformerBlock, max abs error <= 1e-4.

use std::path::Path;
use std::rc::Rc;

use burn::tensor::{Tensor, TensorData};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::heads::convnext::ConvNextBlock;
use flowlens_core::heads::dual_stream::JointBlock;
use flowlens_core::nn::fused::ops::attention::AttentionMask;
use flowlens_core::weights::{SafetensorsFile, VarBuilder, WeightStore};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/heads")
        .join(name)
}

fn tensor<const D: usize>(f: &SafetensorsFile, name: &str) -> Tensor<B, D> {
    let shape: [usize; D] = f.shape(name).unwrap().try_into().unwrap();
    Tensor::from_data(
        TensorData::new(f.read_f32(name, &shape).unwrap(), shape),
        &Default::default(),
    )
}

fn max_err<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

#[test]
fn convnext_block_matches_janusflow() {
    let path = fixture("convnext.safetensors");
    let f = SafetensorsFile::open(&path).unwrap();
    let store = Rc::new(WeightStore::open(&path).unwrap());
    let device = Default::default();
    let block =
        ConvNextBlock::<B>::new(&VarBuilder::load(store, &device).pp("block"), 16, 24).unwrap();
    let y = block.forward(tensor(&f, "input.x"), &tensor(&f, "input.cond"));
    let err = max_err(y, tensor::<4>(&f, "output.y"));
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn joint_block_matches_diffusers() {
    let path = fixture("joint.safetensors");
    let f = SafetensorsFile::open(&path).unwrap();
    let store = Rc::new(WeightStore::open(&path).unwrap());
    let device = Default::default();
    let block =
        JointBlock::<B>::new(&VarBuilder::load(store, &device).pp("block"), 32, 4, 4).unwrap();
    let x: Tensor<B, 3> = tensor(&f, "input.x");
    let ctx: Tensor<B, 3> = tensor(&f, "input.context");
    let [b, n, _] = x.dims();
    let t = ctx.dims()[1];
    // No blocked keys: the same as no mask.
    let mask = AttentionMask::new(None, b, t + n, false, 4, 1, &device);
    let (x, ctx) = block.forward(x, ctx, &tensor(&f, "input.c"), &mask);
    let (ex, ec) = (
        max_err(x, tensor::<3>(&f, "output.x")),
        max_err(ctx, tensor::<3>(&f, "output.context")),
    );
    assert!(
        ex <= 1e-4 && ec <= 1e-4,
        "max abs error image {ex}, context {ec}"
    );
}
