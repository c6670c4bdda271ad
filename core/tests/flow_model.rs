//! The flow model's structure: shapes of every variant, parameter counts, initial identities,
//! causality, the CFG rows and stage-1 freezing.

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use flowlens_core::device::CpuBackend as B;
use flowlens_core::flow::{
    FlowConfig, FlowModel, ParamCounts, TapPooling, TapRequest, Variant, unconditional_rows,
};
use flowlens_core::heads::dual_stream::JointBlock;
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
