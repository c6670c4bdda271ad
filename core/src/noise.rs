//! Deterministic random draws from an explicit generator (never the backend's global one), so
//! that results depend only on the seeds: logit-normal times (SD3) and standard normal noise
//! (Box-Muller).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;

/// `n` draws of `sigmoid(N(mean, std))`.
pub fn logit_normal(rng: &mut impl Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (1.0 / (1.0 + (-(mean + std * z)).exp())) as f32
        })
        .collect()
}

/// Standard normal noise of a shape, from `rng` (deterministic given the seed, unlike the
/// backend's global generator).
pub fn normal_noise<B: Backend, const D: usize>(
    rng: &mut impl Rng,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let values = normal_values(rng, shape.iter().product());
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// `n` standard normal values from `rng` (Box-Muller).
pub fn normal_values(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}
