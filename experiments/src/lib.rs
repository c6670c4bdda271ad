//! flowlens-experiments: the paper's protocols as code and the `flowlens` command line.

pub mod ablation;
pub mod cli;
pub mod commands;
pub mod eval;
pub mod exp1;
pub mod exp2;
pub mod grid;
pub mod io;
pub mod live_cka;
pub mod llm_features;
pub mod measure;
pub mod pipeline;
pub mod probes;
pub mod protocol;
pub mod report;
pub mod training;
pub mod vae_cmd;
