//! Statistics of human preference studies (issue 17, docs/design STUDY.md section 4), on plain
//! counts and arrays: tallies and the naive intervals and tests of a proportion, the clustered
//! inference a study's primary result uses (two-way cluster bootstrap, prompt sign-flip test),
//! intraclass correlation, design effect and the planner, agreement between raters,
//! Bradley-Terry scores for more than two systems, multiple-testing correction, and the special
//! functions under them. Checked against SciPy, statsmodels, krippendorff and choix in
//! tests/fixtures/pref (made by tools/fixtures/make_pref_fixtures.py).

pub mod agreement;
pub mod bt;
pub mod cluster;
pub mod figure;
pub mod proportion;
pub mod special;
#[cfg(test)]
mod tests;

pub use agreement::{Fleiss, Level, fleiss, krippendorff, leave_one_out, raw_agreement};
pub use bt::{BtFit, PairVote};
pub use cluster::{
    ClusterBootstrap, ClusterT, Outcome, Plan, SignFlip, Vote, cluster_bootstrap, cluster_t,
    design_effect, heterogeneity, icc_anova, phi, plan, sign_flip, tally,
};
pub use figure::{ForestFigure, ForestRow, PreferenceBar, PreferenceFigure};
pub use proportion::{Interval, Tally, clopper_pearson, holm, jeffreys, sign_test, wilson};
