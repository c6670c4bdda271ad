//! flowlens-experiments: the paper's protocols as code and the `flowlens` command line.

pub mod cli;
pub mod llm_features;
