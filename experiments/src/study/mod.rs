//! Human preference studies (issue 17; docs/STUDY_FORMAT.md, ../shared/design/STUDY.md
//! section 5): blinded, counterbalanced pairwise ratings of images the study's systems made
//! from the same prompts and initial noise, collected in the lab or a self-contained page, and
//! analysed with inference that accounts for votes clustering by prompt and rater.
//!
//! - [`design`]: `study.toml` (systems, prompts, sampler, raters, protocol, criteria and the
//!   pre-registered analysis) and prompt files;
//! - [`files`]: the study directory, manifest, key, lock, audit log, whole-file writes;
//! - [`assign`]: items, gold items, coverage, counterbalancing, per-rater order, repeats;
//! - [`generate`]: `study new` (images from runs or folders, opaque ids, degraded gold copies);
//! - [`lock`]: `study lock` and `study unblind`; [`plan`]: the planner;
//! - [`page`]: the rating page and the ratings file; [`ratings`]: import, lab sessions, merge;
//! - [`monitor`]: the blind monitor; [`blind`]: one rater's view for the lab's rate mode;
//! - [`simulate`]: raters with known ground truth;
//! - [`analyze`] and [`outputs`]: every number, table, figure and the methods paragraph;
//!   [`section`]: the experiment report's section for a study beside the experiments;
//! - [`demo`]: the demo's study with simulated raters.

pub mod analyze;
pub mod assign;
pub mod blind;
pub mod demo;
pub mod design;
pub mod files;
pub mod generate;
pub mod lock;
pub mod monitor;
pub mod outputs;
pub mod page;
pub mod plan;
pub mod ratings;
pub mod section;
pub mod simulate;
