//! One file per `flowlens` command: its arguments (clap) beside the code that runs it. The
//! commands call the library modules with plain values.

pub mod args;
pub mod bench;
pub mod eval;
pub mod eval_shapes;
pub mod experiment;
pub mod llm_features;
pub mod measure;
pub mod model_info;
pub mod sample;
pub mod study;
pub mod train;
pub mod vae;
