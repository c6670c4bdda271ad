//! `flowlens bench train|sample`: the speed of a preset and variant with random weights and
//! random inputs, nothing downloaded (no data set, no VAE): training steps (forward, backward,
//! AdamW) per second with model FLOPs utilisation, and sampling with and without taps. For
//! sizing a GPU before a run, and the GPU check (tools/gpu/check.sh).

use std::time::Instant;

use anyhow::{Result, bail};
use burn::backend::Autodiff;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use flowlens_core::device::{BackendTask, DeviceSpec};
use flowlens_core::flow::rectified::{
    NoSink, SamplerConfig, TextBatch, sample_euler, velocity_loss,
};
use flowlens_core::flow::{FlowConfig, FlowModel, ParamCounts, Preset, TapRequest, Variant};
use flowlens_core::nn::precision::{Precision, compute_in_bf16};

#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Training steps per second (stage 2, batch on one device), and model FLOPs utilisation.
    Train(BenchArgs),
    /// Sampling (Euler + CFG 2) images per second, with every tap and without.
    Sample(BenchArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// tiny | small | paper
    #[arg(long, default_value = "paper")]
    pub preset: Preset,
    /// baseline | decoder-only | encoder-only | both | uvit
    #[arg(long, default_value = "both")]
    pub variant: Variant,
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Timed steps (training steps, or whole samplings), after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Euler steps per sampling.
    #[arg(long, default_value_t = 30)]
    pub solver_steps: usize,
    /// f32 | mixed | bf16 (training)
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// The device's dense bf16 peak in TFLOP/s, for the utilisation (H100/H200 SXM: 989).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// One JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// Training FLOPs of one sample: 6 x parameters x tokens for the products (forward 2, backward
/// 4) and 6 x 2 x tokens^2 x width per attention layer (scores and values, forward and
/// backward), with the LLM's sequence as every block's token count (the heads see about as
/// many).
pub fn train_flops_per_sample(c: &FlowConfig) -> f64 {
    let p = ParamCounts::of(c).total as f64;
    let s = (c.text_len + 1 + c.image_tokens()) as f64;
    let l = &c.llm;
    let attention_layers = l.num_hidden_layers + c.joint_blocks + c.single_blocks;
    let width = (l.num_attention_heads * l.head_dim) as f64;
    6.0 * p * s + 12.0 * attention_layers as f64 * s * s * width
}

struct Task<'a> {
    args: &'a BenchArgs,
    sample: bool,
}

fn inputs<B: Backend>(
    c: &FlowConfig,
    b: usize,
    device: &B::Device,
) -> (Tensor<B, 4>, Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let s = c.latent_size;
    let tl = c.text_len;
    let z = Tensor::random(
        [b, c.latent_channels, s, s],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let ids: Vec<i64> = (0..b * tl)
        .map(|i| {
            if i % tl == 0 {
                1
            } else {
                (3 + i * 7 % 500) as i64
            }
        })
        .collect();
    let mask: Vec<i64> = (0..b * tl).map(|i| i64::from(i % tl < tl / 2)).collect();
    (
        z,
        Tensor::from_data(TensorData::new(ids, [b, tl]), device),
        Tensor::from_data(TensorData::new(mask, [b, tl]), device),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl BackendTask for Task<'_> {
    type Output = Result<serde_json::Value>;

    fn run<B: Backend>(self, device: B::Device) -> Result<serde_json::Value> {
        let a = self.args;
        let c = FlowConfig::of(a.preset, a.variant);
        let b = a.batch_size;
        if self.sample {
            let model = FlowModel::<B>::init(&c, &device);
            let config = SamplerConfig {
                steps: a.solver_steps,
                ..Default::default()
            };
            let time = |taps: &TapRequest| -> Result<f64> {
                let mut times = Vec::new();
                for i in 0..=a.steps {
                    let (z, ids, mask) = inputs::<B>(&c, b, &device);
                    let text = TextBatch {
                        ids,
                        mask,
                        pad_id: 2,
                    };
                    let start = Instant::now();
                    let x = sample_euler(&model, z, text, &config, taps, &mut NoSink)?;
                    let _: f32 = x.sum().into_scalar().elem();
                    if i > 0 {
                        times.push(start.elapsed().as_secs_f64());
                    }
                }
                Ok(b as f64 / median(times))
            };
            let plain = time(&TapRequest::none())?;
            let taps = if a.variant == Variant::Uvit {
                plain
            } else {
                time(&TapRequest::parse("*"))?
            };
            return Ok(serde_json::json!({
                "preset": a.preset.name(), "variant": a.variant.name(), "batch": b,
                "solver_steps": a.solver_steps, "images_per_s": plain,
                "images_per_s_all_taps": taps, "tap_cost": plain / taps - 1.0,
            }));
        }
        type A<B> = Autodiff<B>;
        let mut model = FlowModel::<A<B>>::init(&c, &device);
        let mut optim = AdamWConfig::new().init::<A<B>, FlowModel<A<B>>>();
        let mut times = Vec::new();
        for i in 0..=a.steps {
            let (z, ids, mask) = inputs::<A<B>>(&c, b, &device);
            let target =
                Tensor::<A<B>, 4>::random(z.dims(), Distribution::Normal(0.0, 1.0), &device);
            let t = Tensor::<A<B>, 1>::random([b], Distribution::Uniform(0.0, 1.0), &device);
            let start = Instant::now();
            let loss = {
                let _p = compute_in_bf16(a.precision.bf16_compute());
                let out = model.forward(z, t, ids, mask, &TapRequest::none())?;
                velocity_loss(out.velocity, target)
            };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-4, model, grads);
            // Wait for the device: read a value the update wrote.
            let _: f32 = model
                .time_embed
                .linear_2
                .weight
                .val()
                .sum()
                .into_scalar()
                .elem();
            if i > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
        let step = median(times);
        let samples = b as f64 / step;
        let flops = train_flops_per_sample(&c) * samples;
        Ok(serde_json::json!({
            "preset": a.preset.name(), "variant": a.variant.name(), "batch": b,
            "precision": a.precision.name(), "seconds_per_step": step,
            "samples_per_s": samples, "model_tflops": flops / 1e12,
            "mfu": a.peak_tflops.map(|p| flops / (p * 1e12)),
        }))
    }
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    let (args, sample) = match &cmd {
        BenchCmd::Train(a) => (a, false),
        BenchCmd::Sample(a) => (a, true),
    };
    if args.batch_size == 0 || args.steps == 0 {
        bail!("--batch-size and --steps must be at least 1");
    }
    let out = args.device.run(Task { args, sample })??;
    if args.json {
        println!("{out}");
    } else if sample {
        println!(
            "{} {} batch {}, {} Euler steps with CFG: {:.3} images/s, {:.3} with every tap ({:+.1} %)",
            args.preset,
            args.variant.name(),
            args.batch_size,
            args.solver_steps,
            out["images_per_s"].as_f64().unwrap_or(0.0),
            out["images_per_s_all_taps"].as_f64().unwrap_or(0.0),
            100.0 * out["tap_cost"].as_f64().unwrap_or(0.0)
        );
    } else {
        println!(
            "{} {} batch {} {}: {:.3} s/step, {:.2} samples/s, {:.1} model TFLOP/s{}",
            args.preset,
            args.variant.name(),
            args.batch_size,
            args.precision,
            out["seconds_per_step"].as_f64().unwrap_or(0.0),
            out["samples_per_s"].as_f64().unwrap_or(0.0),
            out["model_tflops"].as_f64().unwrap_or(0.0),
            out["mfu"]
                .as_f64()
                .map(|m| format!(", MFU {:.1} %", 100.0 * m))
                .unwrap_or_default()
        );
    }
    Ok(())
}
