//! flowlens-experiments: the paper's protocols as code and the `flowlens` command line.

pub mod cli;
pub mod io;
pub mod live_cka;
pub mod llm_features;
pub mod measure;
pub mod training;
