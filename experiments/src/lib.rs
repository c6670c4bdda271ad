//! flowlens-experiments: the paper's protocols as code and the `flowlens` command line.
//!
//! - one folder per protocol, each with its `config` (its section of the experiment file),
//!   `run`, `analyse` and `report` section: [`ablation`] (Table 1), [`exp1`], [`exp2`],
//!   [`grid`];
//! - what they share: [`protocol`] (the experiment file), [`probing`] (prompts and sampling),
//!   [`pipeline`] (train / sample stages, reused when complete), [`training`] (training with
//!   progress), [`live_cka`] (streaming CKA while sampling), [`report`] (the writer and renderer);
//! - the networks' commands as libraries: [`eval`] (MJHQ-30k FID and CLIP score),
//!   [`llm_features`], [`measure`] (CKA / FID of `.npy` files), [`vae_cmd`];
//! - [`cli`] dispatches to [`cmd`], one file per command with its arguments; [`io`] reads and
//!   writes arrays, results and prompt files.

pub mod ablation;
pub mod cli;
pub mod cmd;
pub mod eval;
pub mod exp1;
pub mod exp2;
pub mod grid;
pub mod io;
pub mod live_cka;
pub mod llm_features;
pub mod measure;
pub mod pipeline;
pub mod probing;
pub mod protocol;
pub mod report;
pub mod study;
pub mod training;
pub mod vae_cmd;
