//! flowlens-analysis: the science of the laboratory, on plain arrays (no burn, no model code), so
//! it can analyse features from any source.
//!
//! - [`cka`]: linear CKA, biased and debiased, feature and Gram forms, from exact f64 sufficient
//!   statistics ([`cka::CkaTerms`]);
//! - [`streaming`]: the exact streaming accumulator (Chan/Welford merges of centred moments);
//! - [`grid`]: many pairs at once (taps x solver steps) with per-tap work done once;
//! - [`knn`]: mutual k-NN alignment; minibatch CKA lives in [`cka`];
//! - [`stats`]: seeds, bootstrap intervals, permutation nulls; [`inference`]: the same over
//!   prompts for statistics made of many CKA values (paired, swap test); [`curves`]: AUC and
//!   time-to-threshold over solver steps;
//! - [`fid`] and [`clip`]: FID (as pytorch-fid) and CLIP score.
//!
//! Conventions: rows are samples (prompts), columns are features. Every estimator accumulates in
//! f64 after centring, so constant offsets ("massive activations") cost no precision.

pub mod cka;
pub mod clip;
pub mod curves;
pub mod error;
pub mod fid;
pub mod figures;
pub mod grid;
pub mod inference;
pub mod knn;
pub mod linalg;
pub mod pref;
pub mod stats;
pub mod streaming;
pub mod tables;

pub use cka::{CkaTerms, CkaValues, Estimator, PerEstimator, linear_cka};
pub use error::AnalysisError;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_inference;
