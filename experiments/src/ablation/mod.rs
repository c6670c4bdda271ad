//! The ablation (paper Table 1): [`config`] (`[ablation]` of the experiment file), [`run`]
//! (training every variant and seed), [`analyse`] (the evaluations logged during training,
//! summarised per run), [`report`] (the table, sample grids and curves).

pub mod analyse;
pub mod config;
pub mod report;
pub mod run;
