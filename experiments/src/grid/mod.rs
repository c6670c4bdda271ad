//! `flowlens grid`: the full tap x solver-step CKA grid of one run. [`config`] (`[grid]`),
//! [`run`] (sampling into `probes-grid` or reading a store), [`analyse`] (the analysis crate's
//! `SeedGrid`, as the app computes it), [`report`].

pub mod analyse;
pub mod config;
pub mod report;
pub mod run;
pub mod synthetic;
