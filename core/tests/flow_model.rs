//! The flow model's structure: shapes of every variant, parameter counts, initial identities,
//! causality, the CFG rows and stage-1 freezing.

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::flow::{
    FlowConfig, FlowModel, ParamCounts, TapPooling, TapRequest, Variant, unconditional_rows,
};
use flowlens_core::heads::dual_stream::{DualStreamEncoder, JointBlock};
use flowlens_core::heads::single_stream::ParallelBlock;
use flowlens_core::nn::fused::ops::attention::AttentionMask;
use flowlens_core::weights::VarBuilder;

/// `(z, t, ids, mask)` for a batch of `b`.
type Inputs<Bk> = (
    Tensor<Bk, 4>,
    Tensor<Bk, 1>,
    Tensor<Bk, 2, Int>,
    Tensor<Bk, 2, Int>,
);

fn inputs<Bk: burn::tensor::backend::Backend>(
    c: &FlowConfig,
    b: usize,
    device: &Bk::Device,
) -> Inputs<Bk> {
    let s = c.latent_size;
    let z = Tensor::random(
        [b, c.latent_channels, s, s],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let t = Tensor::from_data(
        TensorData::new(
            (0..b)
                .map(|i| (i as f32 + 0.5) / b as f32)
                .collect::<Vec<_>>(),
            [b],
        ),
        device,
    );
    let tl = c.text_len;
    let ids: Vec<i64> = (0..b * tl)
        .map(|i| {
            if i % tl == 0 {
                1
            } else {
                (3 + i * 7 % 500) as i64
            }
        })
        .collect();
    // Row r has 4 + r real tokens, then padding.
    let mask: Vec<i64> = (0..b * tl)
        .map(|i| i64::from(i % tl < 4 + i / tl))
        .collect();
    (
        z,
        t,
        Tensor::from_data(TensorData::new(ids, [b, tl]), device),
        Tensor::from_data(TensorData::new(mask, [b, tl]), device),
    )
}

#[test]
fn every_variant_predicts_a_velocity_of_the_latent_shape_and_counts_its_parameters() {
    let device = Default::default();
    for v in Variant::ALL {
        let c = FlowConfig::tiny(v);
        let model = FlowModel::<B>::init(&c, &device);
        assert_eq!(
            model.num_params(),
            ParamCounts::of(&c).total,
            "{v:?}: counted vs built"
        );
        let (z, t, ids, mask) = inputs::<B>(&c, 2, &device);
        let out = model.forward(z, t, ids, mask, &TapRequest::none()).unwrap();
        assert_eq!(
            out.velocity.dims(),
            [2, c.latent_channels, c.latent_size, c.latent_size],
            "{v:?}"
        );
        assert!(out.taps.is_empty());
        let values: Vec<f32> = out.velocity.into_data().to_vec().unwrap();
        assert!(values.iter().all(|x| x.is_finite()), "{v:?}");
    }
}

#[test]
fn paper_preset_parameter_counts_match_model_md() {
    // MODEL.md 3.3: JanusFlow heads 75.3M (encoder 21.61M with the 5.77M time MLP, decoder
    // 50.56M, aligners 3.15M); baseline about 1.175B and "both" about 1.21B with lm_head.
    let base = ParamCounts::of(&FlowConfig::paper(Variant::Baseline));
    assert_eq!(base.llm + base.llm_lm_head, 1_100_048_384);
    assert_eq!(base.time_embed, 5_771_264);
    let heads = (base.time_embed + base.encoder + base.decoder) as f64;
    assert!((heads / 75.3e6 - 1.0).abs() < 0.01, "{heads}");
    assert!((base.total_with_lm_head as f64 / 1.175e9 - 1.0).abs() < 0.01);
    let both = ParamCounts::of(&FlowConfig::paper(Variant::Both));
    assert!(
        (both.total_with_lm_head as f64 / 1.21e9 - 1.0).abs() < 0.01,
        "{}",
        both.total_with_lm_head
    );
    let uvit = ParamCounts::of(&FlowConfig::paper(Variant::Uvit));
    assert!(
        (uvit.total_with_lm_head as f64 / 1.3e9 - 1.0).abs() < 0.02,
        "{}",
        uvit.total_with_lm_head
    );
}

/// A pre-trained LLM's token embeddings are small (RMS 0.059 in the demo's prior) next to the
/// text stream's sin-cos positions (RMS 0.71): the text stream normalises each embedding before
/// its projection and the residual is in units of each token's embedding RMS, so scaling every
/// embedding by 8 leaves the noise stream as it was and scales the residual by exactly 8, while
/// a different text changes the noise stream (it reads the text, not only its positions).
#[test]
fn the_dual_stream_encoder_reads_the_llm_embeddings_whatever_their_scale() {
    use burn::module::Param;
    let device = Default::default();
    // Fixed values (not the backend's shared RNG, which other tests advance concurrently).
    let normal = |shape: &[usize], sd: f64, seed: u64| -> TensorData {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let (u, v) = (uniform().max(1e-300), uniform());
                (sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect();
        TensorData::new(values, shape.to_vec())
    };
    let vb = VarBuilder::<B>::init(&device);
    let (c, grid, dim, llm) = (12, 4, 32, 64);
    let mut enc = DualStreamEncoder::<B>::new(&vb.pp("e"), c, 2, grid, dim, 4, 2, 4, llm).unwrap();
    // Open every adaLN gate and the residual (zero at initialisation), as training does.
    let mut seed = 100;
    let mut random = |shape: [usize; 2]| {
        seed += 1;
        Param::from_tensor(Tensor::<B, 2>::from_data(
            normal(&shape, 0.2, seed),
            &device,
        ))
    };
    for block in &mut enc.blocks {
        for s in [&mut block.image, &mut block.context] {
            s.norm1.linear.weight = random(s.norm1.linear.weight.dims());
        }
    }
    enc.text_proj_out.weight = random(enc.text_proj_out.weight.dims());
    let z = Tensor::<B, 4>::from_data(normal(&[2, c, 2 * grid, 2 * grid], 1.0, 1), &device);
    let t_emb = Tensor::<B, 2>::from_data(normal(&[2, llm], 1.0, 2), &device);
    let text = |seed: u64| Tensor::<B, 3>::from_data(normal(&[2, 5, llm], 0.06, seed), &device);
    let mask = AttentionMask::new(None, 2, 5 + grid * grid, false, 4, 1, &device);
    let e = text(7);
    let small = enc.forward(z.clone(), e.clone(), &t_emb, &mask);
    let large = enc.forward(z.clone(), e.clone() * 8.0, &t_emb, &mask);
    let max_abs = |t: Tensor<B, 3>| t.abs().max().into_scalar();
    let size = max_abs(small.image_tokens.clone());
    let image_change = max_abs(small.image_tokens.clone() - large.image_tokens) / size;
    assert!(
        image_change < 1e-3,
        "noise stream changed by {image_change} (relative)"
    );
    let (r1, r8) = (small.text_residual.unwrap(), large.text_residual.unwrap());
    let residual_error = max_abs(r8 - r1.clone() * 8.0) / max_abs(r1.clone() * 8.0);
    // (LayerNorm's eps: 1e-6 against a variance of 0.0036 or 0.23.)
    assert!(residual_error < 1e-3, "relative error {residual_error}");
    // The residual is of the embeddings' own size, not of order 1.
    let rms = |t: Tensor<B, 3>| t.square().mean().sqrt().into_scalar();
    let ratio = rms(r1) / rms(e);
    assert!(ratio < 10.0, "{ratio}");
    let other = enc.forward(z, text(8), &t_emb, &mask);
    let text_change = max_abs(small.image_tokens - other.image_tokens) / size;
    assert!(
        text_change > 1e-2,
        "the noise stream ignores the text: {text_change}"
    );
}

#[test]
fn adaln_zero_blocks_start_as_the_identity_and_the_text_residual_is_zero() {
    let device = Default::default();
    let vb = VarBuilder::<B>::init(&device);
    let block = JointBlock::new(&vb.pp("j"), 32, 4, 4).unwrap();
    let x = Tensor::<B, 3>::random([2, 6, 32], Distribution::Normal(0.0, 1.0), &device);
    let ctx = Tensor::<B, 3>::random([2, 3, 32], Distribution::Normal(0.0, 1.0), &device);
    let c = Tensor::<B, 2>::random([2, 32], Distribution::Normal(0.0, 1.0), &device);
    let joint = AttentionMask::new(None, 2, 9, false, 4, 1, &device);
    let (x2, ctx2) = block.forward(x.clone(), ctx.clone(), &c, &joint);
    assert_eq!(x2.into_data(), x.clone().into_data());
    assert_eq!(ctx2.into_data(), ctx.into_data());
    let par = ParallelBlock::new(&vb.pp("p"), 32, 4, 4).unwrap();
    let single = AttentionMask::new(None, 2, 6, false, 4, 1, &device);
    assert_eq!(
        par.forward(x.clone(), &c, &single).into_data(),
        x.into_data()
    );

    // The frozen LLM sees exactly its own embeddings at initialisation.
    let cfg = FlowConfig::tiny(Variant::Both);
    let model = FlowModel::<B>::init(&cfg, &device);
    let (z, t, ids, mask) = inputs::<B>(&cfg, 2, &device);
    let out = model
        .forward(z, t, ids.clone(), mask, &TapRequest::parse("enc.text"))
        .unwrap();
    let native = model.llm.embed(ids);
    assert_eq!(
        out.taps["enc.text"].value.clone().into_data(),
        native.into_data()
    );
}

#[test]
fn llm_text_positions_ignore_the_image_tokens() {
    let device = Default::default();
    let c = FlowConfig::tiny(Variant::Baseline);
    let model = FlowModel::<B>::init(&c, &device);
    let (z, t, ids, mask) = inputs::<B>(&c, 2, &device);
    let z2 = Tensor::random(z.dims(), Distribution::Normal(0.0, 1.0), &device);
    let request = TapRequest::parse("llm.h*");
    let a = model
        .forward(z, t.clone(), ids.clone(), mask.clone(), &request)
        .unwrap();
    let b = model.forward(z2, t, ids, mask, &request).unwrap();
    for l in 0..=c.llm.num_hidden_layers {
        let name = format!("llm.h{l:02}.text");
        assert_eq!(
            a.taps[&name].value.clone().into_data(),
            b.taps[&name].value.clone().into_data(),
            "{name}"
        );
        let image = format!("llm.h{l:02}.image");
        assert_ne!(
            a.taps[&image].value.clone().into_data(),
            b.taps[&image].value.clone().into_data(),
            "{image}"
        );
    }
    let pooled = a.taps["llm.h02.image"].pool(TapPooling::LayerNormMean);
    assert_eq!(pooled.dims(), [2, c.llm.hidden_size]);
}

/// Taps pooled as the forward makes them (what the sampler asks for) are bit for bit the
/// whole taps pooled afterwards, for every variant with taps, every pooling and a row count
/// below the batch (the conditional half of a CFG batch).
#[test]
fn taps_pooled_at_once_equal_the_whole_taps_pooled_afterwards() {
    let device = Default::default();
    for variant in [
        Variant::Baseline,
        Variant::DecoderOnly,
        Variant::EncoderOnly,
        Variant::Both,
    ] {
        let c = FlowConfig::tiny(variant);
        let model = FlowModel::<B>::init(&c, &device);
        let (z, t, ids, mask) = inputs::<B>(&c, 3, &device);
        let whole = TapRequest::parse("*");
        let out = model
            .forward(z.clone(), t.clone(), ids.clone(), mask.clone(), &whole)
            .unwrap();
        assert!(out.pooled.is_empty());
        for pooling in [TapPooling::Mean, TapPooling::LayerNormMeanWithoutBos] {
            let at_once = whole.pooled_at_once(pooling, 2);
            let pooled = model
                .forward(z.clone(), t.clone(), ids.clone(), mask.clone(), &at_once)
                .unwrap();
            assert!(pooled.taps.is_empty());
            assert_eq!(
                pooled.velocity.into_data(),
                out.velocity.clone().into_data()
            );
            let names: Vec<&String> = pooled.pooled.keys().collect();
            assert_eq!(names, out.taps.keys().collect::<Vec<_>>(), "{variant:?}");
            for (name, tap) in &out.taps {
                let first = flowlens_core::flow::taps::Tap {
                    value: tap.value.clone().narrow(0, 0, 2),
                    mask: tap.mask.clone().map(|m| m.narrow(0, 0, 2)),
                };
                assert_eq!(
                    pooled.pooled[name].clone().into_data(),
                    first.pool(pooling).into_data(),
                    "{variant:?} {name} {pooling:?}"
                );
            }
        }
    }
}

#[test]
fn unconditional_rows_keep_bos_and_the_length() {
    let device = Default::default();
    let c = FlowConfig::tiny(Variant::Both);
    let (z, t, ids, _) = inputs::<B>(&c, 2, &device);
    let (u_ids, u_mask) = unconditional_rows(&ids, 2);
    assert_eq!(u_ids.dims(), ids.dims());
    let m: Vec<i64> = u_mask
        .clone()
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    assert_eq!(
        &m[..c.text_len],
        &[vec![1], vec![0; c.text_len - 1]].concat()[..]
    );
    let i: Vec<i64> = u_ids.clone().into_data().convert::<i64>().to_vec().unwrap();
    assert_eq!((i[0], i[1], i[c.text_len - 1]), (1, 2, 2));
    let model = FlowModel::<B>::init(&c, &device);
    let out = model
        .forward(z, t, u_ids, u_mask, &TapRequest::parse("llm.h01"))
        .unwrap();
    // Same sequence layout: image taps have the grid's token count.
    assert_eq!(out.taps["llm.h01.image"].value.dims()[1], c.image_tokens());
}

#[test]
fn stage_one_freezing_sends_gradients_to_the_heads_only() {
    type A = Autodiff<B>;
    let device = Default::default();
    let c = FlowConfig::tiny(Variant::Both);
    let model = FlowModel::<A>::init(&c, &device).freeze_llm();
    let (z, t, ids, mask) = inputs::<A>(&c, 2, &device);
    let v = model
        .forward(z, t, ids, mask, &TapRequest::none())
        .unwrap()
        .velocity;
    let grads = v.square().mean().backward();
    assert!(model.llm.embed_tokens.grad(&grads).is_none());
    assert!(
        model.llm.layers[0]
            .mlp
            .up_proj
            .weight
            .grad(&grads)
            .is_none()
    );
    let enc = model.dual_stream_encoder.as_ref().unwrap();
    let dec = model.single_stream_decoder.as_ref().unwrap();
    // Zero-initialised output layers get gradients first; the encoder's noise projection is
    // reached through the frozen LLM.
    assert!(dec.proj_out.weight.grad(&grads).is_some());
    assert!(enc.noise_proj_out.weight.grad(&grads).is_some());
    assert!(model.time_embed.linear_1.weight.grad(&grads).is_some());
    // Stage 2: everything.
    let model = FlowModel::<A>::init(&c, &device);
    let (z, t, ids, mask) = inputs::<A>(&c, 2, &device);
    let v = model
        .forward(z, t, ids, mask, &TapRequest::none())
        .unwrap()
        .velocity;
    let grads = v.square().mean().backward();
    assert!(model.llm.embed_tokens.grad(&grads).is_some());
}
