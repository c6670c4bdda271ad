//! Statistics of human preference studies (issue 17, docs/design STUDY.md section 4), on plain
//! counts and arrays: tallies and the intervals and tests of a proportion, multiple-testing
//! correction, and the special functions under them.

pub mod proportion;
pub mod special;

pub use proportion::{Interval, Tally, clopper_pearson, holm, jeffreys, sign_test, wilson};
