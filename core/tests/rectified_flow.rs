//! Rectified flow: the interpolant, logit-normal times, text dropout, the Euler + CFG sampler
//! with taps, and a short training run on the shapes set whose loss falls.

use std::collections::BTreeMap;

use burn::backend::Autodiff;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use flowlens_core::data::ShapesDataset;
use flowlens_core::device::CpuBackend as B;
use flowlens_core::flow::rectified::{
    NoSink, SamplerConfig, StepSink, TextBatch, VelocityField, interpolate, sample_euler,
    text_dropout, velocity_loss,
};
use flowlens_core::flow::{
    FlowConfig, FlowInputError, FlowModel, FlowOutput, TapRequest, Taps, Variant,
};
use flowlens_core::noise::{logit_normal, normal_noise};
use flowlens_core::tokenizer::{LlamaTokenizer, PaddingSide};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Constant velocities: `c` for conditional rows, `u` for unconditional ones (mask = BOS only).
struct ConstantField {
    c: f32,
    u: f32,
}

impl<Bk: Backend> VelocityField<Bk> for ConstantField {
    fn velocity(
        &self,
        z: Tensor<Bk, 4>,
        _t: Tensor<Bk, 1>,
        _ids: Tensor<Bk, 2, Int>,
        mask: Tensor<Bk, 2, Int>,
        _taps: &TapRequest,
    ) -> Result<FlowOutput<Bk>, FlowInputError> {
        let [b, c, h, w] = z.dims();
        let real: Vec<i64> = mask
            .sum_dim(1)
            .into_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        let v: Vec<f32> = real
            .iter()
            .flat_map(|&n| std::iter::repeat_n(if n > 1 { self.c } else { self.u }, c * h * w))
            .collect();
        Ok(FlowOutput {
            velocity: Tensor::from_data(TensorData::new(v, [b, c, h, w]), &z.device()),
            taps: Taps::new(),
            pooled: Default::default(),
        })
    }
}

/// `b` rows of `t` tokens (BOS, 4 caption tokens, pads) with pad id 2.
fn text(b: usize, t: usize, device: &burn::backend::flex::FlexDevice) -> TextBatch<B> {
    let ids: Vec<i64> = (0..b * t)
        .map(|i| if i % t == 0 { 1 } else { 5 + (i % 7) as i64 })
        .collect();
    let mask: Vec<i64> = (0..b * t).map(|i| i64::from(i % t < 5)).collect();
    TextBatch {
        ids: Tensor::from_data(TensorData::new(ids, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
        pad_id: 2,
    }
}

#[test]
fn euler_integrates_a_constant_field_exactly_and_applies_guidance() {
    let device = Default::default();
    let z0 = Tensor::<B, 4>::zeros([2, 3, 4, 4], &device);
    let rows = text(2, 8, &device);
    let field = ConstantField { c: 0.75, u: -0.5 };
    let plain = SamplerConfig {
        steps: 30,
        cfg: 1.0,
        ..Default::default()
    };
    let z = sample_euler(
        &field,
        z0.clone(),
        rows.clone(),
        &plain,
        &TapRequest::none(),
        &mut NoSink,
    )
    .unwrap();
    let v: Vec<f32> = z.into_data().to_vec().unwrap();
    assert!(v.iter().all(|x| (x - 0.75).abs() < 1e-5));
    // w = 2: v = 2 v_c - v_u = 2.0.
    let guided = SamplerConfig {
        steps: 10,
        cfg: 2.0,
        ..Default::default()
    };
    let z = sample_euler(&field, z0, rows, &guided, &TapRequest::none(), &mut NoSink).unwrap();
    let v: Vec<f32> = z.into_data().to_vec().unwrap();
    assert!(v.iter().all(|x| (x - 2.0).abs() < 1e-5), "{}", v[0]);
}

struct Recorder(Vec<(usize, f32, BTreeMap<String, Vec<usize>>)>);

impl StepSink<B> for Recorder {
    fn on_step(&mut self, step: usize, t: f32, taps: BTreeMap<String, Tensor<B, 2>>) {
        self.0.push((
            step,
            t,
            taps.into_iter()
                .map(|(k, v)| (k, v.dims().to_vec()))
                .collect(),
        ));
    }
}

#[test]
fn the_sampler_hands_every_steps_pooled_conditional_taps_to_the_sink_deterministically() {
    let device = Default::default();
    let c = FlowConfig::tiny(Variant::Both);
    let model = FlowModel::<B>::init(&c, &device);
    let rows = text(3, c.text_len, &device);
    let config = SamplerConfig {
        steps: 4,
        ..Default::default()
    };
    let taps = TapRequest::parse("enc.text,enc.noise,llm.h02");
    let run = |sink: &mut Recorder| {
        let shape = [3, c.latent_channels, c.latent_size, c.latent_size];
        let z0 = normal_noise::<B, 4>(&mut ChaCha8Rng::seed_from_u64(5), shape, &device);
        sample_euler(&model, z0, rows.clone(), &config, &taps, sink).unwrap()
    };
    let mut rec = Recorder(Vec::new());
    let a = run(&mut rec);
    assert_eq!(rec.0.len(), 4);
    for (k, (step, t, shapes)) in rec.0.iter().enumerate() {
        assert_eq!((*step, *t), (k, k as f32 / 4.0));
        let names: Vec<&String> = shapes.keys().collect();
        assert_eq!(
            names,
            ["enc.noise", "enc.text", "llm.h02.image", "llm.h02.text"]
        );
        assert!(
            shapes.values().all(|s| s == &vec![3, c.llm.hidden_size]),
            "{shapes:?}"
        );
    }
    let b = run(&mut Recorder(Vec::new()));
    assert_eq!(a.into_data(), b.into_data(), "same seed, same samples");
}

#[test]
fn rectified_flow_pieces() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let t = logit_normal(&mut rng, 20_000, 0.0, 1.0);
    let mean = t.iter().map(|&x| x as f64).sum::<f64>() / t.len() as f64;
    assert!(t.iter().all(|&x| x > 0.0 && x < 1.0) && (mean - 0.5).abs() < 0.01);
    let device = Default::default();
    let x = Tensor::<B, 4>::ones([2, 3, 2, 2], &device);
    let z0 = Tensor::<B, 4>::zeros([2, 3, 2, 2], &device);
    let t = Tensor::<B, 1>::from_data(TensorData::new(vec![0.0f32, 0.25], [2]), &device);
    let zt: Vec<f32> = interpolate(&x, &z0, &t).into_data().to_vec().unwrap();
    assert!(zt[..12].iter().all(|v| *v == 0.0) && zt[12..].iter().all(|v| *v == 0.25));
    let TextBatch { ids, mask, .. } = text(400, 8, &device);
    let (_, _, none) = text_dropout(ids.clone(), mask.clone(), 0.0, 2, &mut rng);
    assert!(none.iter().all(|d| !d));
    let (d_ids, d_mask, dropped) = text_dropout(ids, mask, 0.1, 2, &mut rng);
    let frac = dropped.iter().filter(|&&d| d).count() as f64 / 400.0;
    assert!((0.06..0.14).contains(&frac), "{frac}");
    let m: Vec<i64> = d_mask
        .sum_dim(1)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .unwrap();
    let i: Vec<i64> = d_ids.into_data().convert::<i64>().to_vec().unwrap();
    for (row, &d) in dropped.iter().enumerate() {
        assert_eq!(m[row], if d { 1 } else { 5 });
        assert_eq!(i[row * 8], 1, "BOS kept");
    }
}

#[test]
fn a_short_training_run_on_shapes_lowers_the_loss() {
    type A = Autodiff<B>;
    let device = Default::default();
    // A seeded initialisation, so the test is the same on every run.
    B::seed(&device, 7);
    let c = FlowConfig::tiny(Variant::Baseline);
    let mut model = FlowModel::<A>::init(&c, &device);
    let tok = LlamaTokenizer::from_path(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/llama/tiny-llama"
    ))
    .unwrap();
    let data = ShapesDataset::new(0, 64);
    let codec = c.codec.build::<A>().unwrap();
    let mut optim = AdamWConfig::new()
        .with_beta_2(0.95)
        .with_weight_decay(0.0)
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let b = 4;
    let mut losses = Vec::new();
    for step in 0..24 {
        let items: Vec<(Vec<f32>, String)> = (0..b)
            .map(|i| data.item((step * b + i) % 64, c.image_size))
            .collect();
        let pixels: Vec<f32> = items.iter().flat_map(|(p, _)| p.clone()).collect();
        let size = c.image_size;
        let x = codec.encode(Tensor::<A, 4>::from_data(
            TensorData::new(pixels, [b, 3, size, size]),
            &device,
        ));
        let captions: Vec<&str> = items.iter().map(|(_, c)| c.as_str()).collect();
        let batch = tok
            .encode_batch(&captions, Some(c.text_len), PaddingSide::Right)
            .unwrap();
        let ids =
            Tensor::<A, 2, Int>::from_data(TensorData::new(batch.ids, [b, c.text_len]), &device);
        let mask =
            Tensor::<A, 2, Int>::from_data(TensorData::new(batch.mask, [b, c.text_len]), &device);
        let t = logit_normal(&mut rng, b, 0.0, 1.0);
        let t = Tensor::<A, 1>::from_data(TensorData::new(t, [b]), &device);
        let z0 = normal_noise::<A, 4>(&mut rng, x.dims(), &device);
        let zt = interpolate(&x, &z0, &t);
        let target = x - z0;
        let out = model
            .forward(zt, t, ids, mask, &TapRequest::none())
            .unwrap();
        let loss = velocity_loss(out.velocity, target);
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    let first: f32 = losses[..6].iter().sum::<f32>() / 6.0;
    let last: f32 = losses[18..].iter().sum::<f32>() / 6.0;
    // Seeded, the ratio is 0.79 on the development machine; 0.85 leaves room for other SIMD
    // paths' rounding, and a model that does not learn (ratio near 1) still fails.
    assert!(last < 0.85 * first, "loss {first} -> {last}: {losses:?}");
}
