//! Flow model time per sample at the `tiny` preset, every variant: forward, forward + backward,
//! and the forward with every tap requested (run in release; docs/PERFORMANCE.md).
//!
//! `cargo bench -p flowlens-core --bench flow_tiny`; tools/bench/flow_tiny_torch.py is the
//! PyTorch side.

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use flowlens_core::device::CpuBackend;
use flowlens_core::flow::{FlowConfig, FlowModel, TapRequest, Variant};

mod common;
use common::time;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Inputs<Bk> = (
    Tensor<Bk, 4>,
    Tensor<Bk, 1>,
    Tensor<Bk, 2, Int>,
    Tensor<Bk, 2, Int>,
);

fn inputs<Bk: Backend>(c: &FlowConfig, b: usize, device: &Bk::Device) -> Inputs<Bk> {
    let s = c.latent_size;
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
    let mask: Vec<i64> = (0..b * tl).map(|i| i64::from(i % tl < 10)).collect();
    (
        Tensor::random(
            [b, c.latent_channels, s, s],
            Distribution::Normal(0.0, 1.0),
            device,
        ),
        Tensor::from_data(TensorData::new(vec![0.5f32; b], [b]), device),
        Tensor::from_data(TensorData::new(ids, [b, tl]), device),
        Tensor::from_data(TensorData::new(mask, [b, tl]), device),
    )
}

fn main() {
    let b = 8;
    let reps = 7;
    println!("batch {b}, median of {reps}; ms per sample");
    println!(
        "| variant | forward | forward, all taps | tap overhead | forward + backward | training step at batch 2 (ms) |"
    );
    println!("|---|---|---|---|---|---|");
    for v in Variant::ALL {
        let c = FlowConfig::tiny(v);
        let device = Default::default();
        let model = FlowModel::<CpuBackend>::init(&c, &device);
        let (z, t, ids, mask) = inputs::<CpuBackend>(&c, b, &device);
        let none = TapRequest::none();
        let all = TapRequest::parse("*").pooled_at_once(flowlens_core::flow::TapPooling::Mean, b);
        let fwd = time(reps, || {
            let out = model
                .forward(z.clone(), t.clone(), ids.clone(), mask.clone(), &none)
                .unwrap();
            std::hint::black_box(out.velocity.sum().into_scalar());
        });
        let fwd_taps = time(reps, || {
            let out = model
                .forward(z.clone(), t.clone(), ids.clone(), mask.clone(), &all)
                .unwrap();
            std::hint::black_box(out.velocity.sum().into_scalar());
            for p in out.pooled.into_values() {
                std::hint::black_box(p.sum().into_scalar());
            }
        });
        let ad_model = FlowModel::<Autodiff<CpuBackend>>::init(&c, &device);
        let train_time = |batch: usize| {
            let (az, at, aids, amask) = inputs::<Autodiff<CpuBackend>>(&c, batch, &device);
            time(reps, || {
                let out = ad_model
                    .forward(az.clone(), at.clone(), aids.clone(), amask.clone(), &none)
                    .unwrap();
                let grads = out.velocity.square().mean().backward();
                let g = ad_model.time_embed.linear_1.weight.grad(&grads);
                std::hint::black_box(g.map(|g| g.sum().into_scalar()));
            })
        };
        let train = train_time(b);
        let small_step = train_time(2);
        let per = |s: f64| s * 1e3 / b as f64;
        println!(
            "| {} | {:.2} | {:.2} | {:+.0}% | {:.2} | {:.0} |",
            v.name(),
            per(fwd),
            per(fwd_taps),
            100.0 * (fwd_taps / fwd - 1.0),
            per(train),
            small_step * 1e3
        );
    }
}
