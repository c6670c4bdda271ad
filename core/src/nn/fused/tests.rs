//! Every fused op against its composed burn version on `Autodiff<Flex>`: values, and the
//! gradients of every input through a random linear functional of the output; and the kernels'
//! results independent of the number of threads.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::ops::act::{composed_quick_gelu, gelu_erf, gelu_tanh, quick_gelu, swiglu};
use super::ops::attention::{AttentionMask, attention};
use super::ops::conv::{composed_grn, depthwise_conv_channels_last, global_response_norm};
use super::ops::norm::{
    Norm, composed_layer_norm, composed_rms_norm, gated_residual, layer_norm_affine, modulate,
    per_token, rms_norm,
};
use super::ops::rope::{Rope, rope};

type A = Autodiff<Flex>;

/// Deterministic values in [-scale, scale] (a fixed LCG per seed).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn leaf<const D: usize>(shape: [usize; D], seed: u64, scale: f32) -> Tensor<A, D> {
    let n = shape.iter().product();
    Tensor::<A, D>::from_data(
        TensorData::new(values(n, seed, scale), shape),
        &Default::default(),
    )
    .require_grad()
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        err <= tol * scale,
        "{what}: max abs error {err} (scale {scale})"
    );
}

/// `sum(y * r)` for a fixed random `r` of y's shape: a loss whose gradient is `r`.
fn functional<const D: usize>(y: Tensor<A, D>) -> Tensor<A, 1> {
    let r = Tensor::<A, D>::from_data(
        TensorData::new(values(y.shape().num_elements(), 99, 1.0), y.dims()),
        &y.device(),
    );
    (y * r).sum()
}

/// Compares fused and composed outputs and the gradients they give every leaf: each side on
/// its own copies of the leaves (a backward pass consumes the graph it ran on).
macro_rules! compare {
    ($what:expr, ($($leaf:ident),+), $fused:expr, $composed:expr, $tol:expr) => {{
        let fused = {
            $(let $leaf = $leaf.clone().detach().require_grad();)+
            let y = $fused;
            let g = functional(y.clone()).backward();
            (host(y), vec![$(host($leaf.grad(&g).expect("fused gradient"))),+])
        };
        let composed = {
            $(let $leaf = $leaf.clone().detach().require_grad();)+
            let y = $composed;
            let g = functional(y.clone()).backward();
            (host(y), vec![$(host($leaf.grad(&g).expect("composed gradient"))),+])
        };
        assert_close(&fused.0, &composed.0, $tol, concat!($what, " values"));
        for (i, (a, b)) in fused.1.iter().zip(&composed.1).enumerate() {
            assert_close(a, b, $tol * 10.0, &format!("{} gradient of input {i}", $what));
        }
    }};
}

#[test]
fn norms_match_composed() {
    let x = leaf([3, 5, 37], 1, 2.0);
    let w = leaf([37], 2, 1.0);
    let b = leaf([37], 3, 1.0);
    compare!(
        "rms",
        (x, w),
        rms_norm(x.clone(), &w, 1e-6),
        composed_rms_norm(x.clone(), &w, 1e-6),
        1e-5
    );
    // A view at an offset of a larger buffer (rows 1..3 of 3; read in place, not copied).
    compare!(
        "rms of a slice",
        (x, w),
        rms_norm(x.clone().slice([1..3, 0..5, 0..37]), &w, 1e-6),
        composed_rms_norm(x.clone().slice([1..3, 0..5, 0..37]), &w, 1e-6),
        1e-5
    );
    compare!(
        "layer",
        (x, w, b),
        layer_norm_affine(x.clone(), &w, &b, 1e-5),
        composed_layer_norm(x.clone(), 1e-5) * w.clone().unsqueeze() + b.clone().unsqueeze(),
        1e-5
    );
    let shift = leaf([3, 37], 4, 0.5);
    let scale = leaf([3, 37], 5, 0.5);
    for norm in [Norm::Layer, Norm::None] {
        let composed = |x: Tensor<A, 3>, shift: &Tensor<A, 2>, scale: &Tensor<A, 2>| {
            let x = match norm {
                Norm::Layer => composed_layer_norm(x, 1e-6),
                _ => x,
            };
            x * (per_token(scale, 5) + 1.0) + per_token(shift, 5)
        };
        compare!(
            "modulate",
            (x, shift, scale),
            modulate(x.clone(), norm, 1e-6, &shift, &scale),
            composed(x.clone(), &shift, &scale),
            1e-5
        );
    }
    let res = leaf([3, 5, 37], 6, 1.0);
    compare!(
        "gated residual",
        (res, shift, x),
        gated_residual(res.clone(), &shift, x.clone()),
        res.clone() + per_token(&shift, 5) * x.clone(),
        1e-6
    );
}

#[test]
fn linear_matches_composed() {
    use super::ops::linear::{composed_linear, linear};
    let x = leaf([3, 7, 33], 50, 1.0);
    let w = leaf([33, 19], 51, 0.5);
    let b = leaf([19], 52, 0.5);
    compare!(
        "linear",
        (x, w, b),
        linear(x.clone(), &w, Some(&b)),
        composed_linear(x.clone(), &w, Some(&b)),
        1e-6
    );
    compare!(
        "linear without bias",
        (x, w),
        linear(x.clone(), &w, None),
        composed_linear(x.clone(), &w, None),
        1e-6
    );
}

#[test]
fn ema_is_the_composed_update_bit_for_bit() {
    use super::ops::ema::{composed_ema, ema};
    let device = Default::default();
    let a = Tensor::<Flex, 2>::from_data(
        TensorData::new(values(70_000, 60, 3.0), [70, 1000]),
        &device,
    );
    let b = Tensor::<Flex, 2>::from_data(
        TensorData::new(values(70_000, 61, 3.0), [70, 1000]),
        &device,
    );
    for decay in [0.99, 0.999, 0.9999] {
        let fused = host(ema(a.clone(), b.clone(), decay));
        let composed = host(composed_ema(a.clone(), b.clone(), decay));
        assert!(
            fused
                .iter()
                .zip(&composed)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "decay {decay}"
        );
    }
}

#[test]
fn activations_match_composed() {
    let x = leaf([4, 1037], 7, 5.0);
    let u = leaf([4, 1037], 8, 2.0);
    use burn::tensor::activation::{gelu, gelu_approximate, silu};
    compare!("gelu erf", (x), gelu_erf(x.clone()), gelu(x.clone()), 2e-6);
    compare!(
        "gelu tanh",
        (x),
        gelu_tanh(x.clone()),
        gelu_approximate(x.clone()),
        2e-6
    );
    compare!(
        "quick gelu",
        (x),
        quick_gelu(x.clone()),
        composed_quick_gelu(x.clone()),
        2e-6
    );
    compare!(
        "swiglu",
        (x, u),
        swiglu(x.clone(), u.clone()),
        silu(x.clone()) * u.clone(),
        2e-6
    );
}

fn composed_attention(
    q: Tensor<A, 4>,
    k: Tensor<A, 4>,
    v: Tensor<A, 4>,
    keys: Option<&Tensor<A, 2, Int>>,
    causal: bool,
) -> Tensor<A, 4> {
    let [b, s, h, _] = q.dims();
    let kvh = k.dims()[2];
    let bias = crate::nn::attention_bias(keys, b, s, causal, &q.device())
        .map(|bias| crate::nn::grouped_bias(bias, kvh, h / kvh));
    let heads = |t: Tensor<A, 4>| t.swap_dims(1, 2);
    crate::nn::scaled_dot_product_attention(heads(q), heads(k), heads(v), bias.as_ref())
        .swap_dims(1, 2)
}

#[test]
fn attention_matches_composed_with_masks_causality_and_groups() {
    let device = Default::default();
    let (b, s, hd) = (3, 9, 8);
    // Sample 1 left-padded by three (its first rows see no key under causality), sample 2 with
    // one padded key in the middle.
    let mut keys = vec![1i64; b * s];
    keys[s..s + 3].fill(0);
    keys[2 * s + 4] = 0;
    let keys = Tensor::<A, 2, Int>::from_data(TensorData::new(keys, [b, s]), &device);
    for (h, kvh, causal, masked) in [
        (4, 2, true, true),
        (4, 4, false, true),
        (2, 1, false, false),
    ] {
        let q = leaf([b, s, h, hd], 10, 1.5);
        let k = leaf([b, s, kvh, hd], 11, 1.5);
        let v = leaf([b, s, kvh, hd], 12, 1.0);
        let key_mask = masked.then_some(&keys);
        let mask = AttentionMask::new(key_mask, b, s, causal, kvh, h / kvh, &device);
        compare!(
            "attention",
            (q, k, v),
            attention(q.clone(), k.clone(), v.clone(), &mask),
            composed_attention(q.clone(), k.clone(), v.clone(), key_mask, causal),
            2e-6
        );
    }
}

#[test]
fn depthwise_conv_and_grn_match_composed() {
    let x = leaf([2, 5, 6, 11], 20, 1.0);
    let w = leaf([11, 1, 7, 7], 21, 0.3);
    let bias = leaf([11], 22, 0.3);
    let composed = |x: Tensor<A, 4>, w: Tensor<A, 4>, bias: Tensor<A, 1>| {
        let options = burn::tensor::ops::ConvOptions::new([1, 1], [3, 3], [1, 1], 11);
        burn::tensor::module::conv2d(x.permute([0, 3, 1, 2]), w, Some(bias), options)
            .permute([0, 2, 3, 1])
    };
    compare!(
        "depthwise conv",
        (x, w, bias),
        depthwise_conv_channels_last(x.clone(), &w, &bias),
        composed(x.clone(), w.clone(), bias.clone()),
        2e-6
    );
    let x = leaf([3, 10, 9], 23, 1.0);
    let (gw, gb) = (leaf([9], 24, 1.0), leaf([9], 25, 1.0));
    compare!(
        "grn",
        (x, gw, gb),
        global_response_norm(x.clone(), &gw, &gb),
        composed_grn(x.clone(), &gw, &gb),
        2e-6
    );
}

#[test]
fn rope_matches_composed() {
    let device = Default::default();
    let (b, s, heads, hd) = (2, 5, 3, 8);
    let rope_cfg = crate::llm::model::Rope::<A>::new(hd, 10000.0, s, heads, heads, &device);
    let x = leaf([b, s, heads * hd], 30, 1.0);
    let op: &Rope = &rope_cfg.fused;
    compare!(
        "rope",
        (x),
        rope(x.clone(), op, |_| unreachable!()),
        crate::llm::model::apply_rope(x.clone(), heads, &rope_cfg.q_cos, &rope_cfg.q_sin),
        1e-6
    );
}

#[test]
fn kernels_do_not_depend_on_the_number_of_threads() {
    // Large enough for the parallel paths, with reductions across rows and samples.
    let run = || {
        let x = leaf([8, 64, 256], 40, 1.0);
        let w = leaf([256], 41, 1.0);
        let q = leaf([8, 80, 4, 32], 42, 1.0);
        let k = leaf([8, 80, 2, 32], 43, 1.0);
        let xc = leaf([8, 8, 8, 256], 44, 1.0);
        let dw = leaf([256, 1, 7, 7], 45, 0.2);
        let db = leaf([256], 46, 0.2);
        // Products above the threaded size each way (forward 512 x 320 x 256, both gradients).
        let lx = leaf([512, 256], 47, 1.0);
        let lw = leaf([256, 320], 48, 0.1);
        let lb = leaf([320], 49, 0.1);
        let mask = AttentionMask::new(None, 8, 80, true, 2, 2, &Default::default());
        let y = functional(rms_norm(x.clone(), &w, 1e-6))
            + functional(super::ops::linear::linear(lx.clone(), &lw, Some(&lb)))
            + functional(attention(q.clone(), k.clone(), k.clone(), &mask))
            + functional(depthwise_conv_channels_last(xc.clone(), &dw, &db));
        let g = y.backward();
        let gx = host(x.grad(&g).expect("gradient"));
        let gw = host(w.grad(&g).expect("gradient"));
        let gq = host(q.grad(&g).expect("gradient"));
        let gk = host(k.grad(&g).expect("gradient"));
        let gxc = host(xc.grad(&g).expect("gradient"));
        let gdw = host(dw.grad(&g).expect("gradient"));
        let gdb = host(db.grad(&g).expect("gradient"));
        let glx = host(lx.grad(&g).expect("gradient"));
        let glw = host(lw.grad(&g).expect("gradient"));
        [gx, gw, gq, gk, gxc, gdw, gdb, glx, glw]
    };
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one = pool(1).install(run);
    for n in [2, 3, 4] {
        assert_eq!(one, pool(n).install(run), "1 thread against {n}");
    }
}

#[test]
fn inference_and_training_forwards_agree() {
    let xf = Tensor::<Flex, 3>::from_data(
        TensorData::new(values(3 * 5 * 37, 1, 2.0), [3, 5, 37]),
        &Default::default(),
    );
    let wf = Tensor::<Flex, 1>::from_data(
        TensorData::new(values(37, 2, 1.0), [37]),
        &Default::default(),
    );
    let x = leaf([3, 5, 37], 1, 2.0);
    let w = leaf([37], 2, 1.0);
    assert_eq!(host(rms_norm(xf, &wf, 1e-6)), host(rms_norm(x, &w, 1e-6)));
}
