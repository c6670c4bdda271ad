//! `flowlens study plan` (STUDY.md 4.7): whether the design can resolve the share it means to
//! detect. The closed form (effective votes needed, prompts needed at this many raters per
//! prompt and the ICC assumed, the prompt-count floor no number of raters removes), and the
//! power of the design's own primary test by Monte Carlo (the closed form ignores rater
//! crossing): simulated studies with the design's prompts and raters per prompt under the
//! logit model, analysed with the prompt sign-flip test.

use std::fmt::Write as _;

use anyhow::Result;
use flowlens_analysis::pref::cluster;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::design::StudyToml;

/// The planner's findings.
#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub prompts: usize,
    pub seeds: usize,
    pub raters_per_prompt: usize,
    pub closed_form: cluster::Plan,
    /// The logit SD of prompts that gives the assumed ICC on the latent scale (π²/3 residual).
    pub sd_prompt: f64,
    pub sd_rater: f64,
    pub simulated_power: f64,
    pub simulated_studies: usize,
    pub resolvable: bool,
    pub text: String,
}

/// A design and effect to simulate: `prompts` x `per_prompt` judgments per pair under the
/// logit model with the pair's first system winning `share` of decisive votes.
#[derive(Debug, Clone, Copy)]
pub struct PowerDesign {
    pub share: f64,
    pub prompts: usize,
    pub per_prompt: usize,
    pub sd_prompt: f64,
    pub sd_rater: f64,
    pub alpha: f64,
}

/// Power of the sign-flip test at `alpha` over `studies` simulated studies.
pub fn simulated_power(d: PowerDesign, studies: usize, seed: u64) -> f64 {
    let PowerDesign {
        share,
        prompts,
        per_prompt,
        sd_prompt,
        sd_rater,
        alpha,
    } = d;
    let base = (share / (1.0 - share)).ln();
    let hits: usize = (0..studies)
        .into_par_iter()
        .map(|k| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(k as u64));
            let votes =
                cluster::simulate_votes(&mut rng, prompts, per_prompt, base, sd_prompt, sd_rater);
            cluster::sign_flip(&votes, 999, seed ^ k as u64)
                .map(|f| (f.p_value < alpha) as usize)
                .unwrap_or(0)
        })
        .sum();
    hits as f64 / studies as f64
}

/// The planner for a study file, with `sd_rater` for the simulation.
pub fn plan(spec: &StudyToml, prompts: usize, sd_rater: f64, studies: usize) -> Result<PlanReport> {
    let a = &spec.analysis;
    let per =
        if spec.raters.ratings_per_pair == 0 || spec.raters.ratings_per_pair >= spec.raters.count {
            spec.raters.count
        } else {
            spec.raters.ratings_per_pair
        };
    let seeds = spec.prompts.seeds_per_prompt;
    // Judgments per prompt cluster: every seed of a prompt belongs to its cluster.
    let m = per * seeds;
    let closed = cluster::plan(a.expected_share, a.alpha, 0.8, m, a.expected_icc)?;
    // Latent-scale ICC: ρ = σ²/(σ² + π²/3).
    let icc = a.expected_icc.min(0.95);
    let sd_prompt = (icc / (1.0 - icc) * std::f64::consts::PI.powi(2) / 3.0).sqrt();
    let power = simulated_power(
        PowerDesign {
            share: a.expected_share,
            prompts,
            per_prompt: m,
            sd_prompt,
            sd_rater,
            alpha: a.alpha,
        },
        studies,
        a.seed,
    );
    let resolvable = (prompts as f64) >= closed.prompts.ceil() && power >= 0.8;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "design: {prompts} prompts x {seeds} seed(s), {per} rater(s) per pair -> {m} judgments per prompt cluster and criterion"
    );
    let _ = writeln!(
        text,
        "to detect a share of {:.2} (alpha {}, power 0.8, two-sided) with prompt ICC {:.2}:",
        a.expected_share, a.alpha, a.expected_icc
    );
    let _ = writeln!(
        text,
        "  effective independent votes needed  {:.0}\n  design effect at {m} per prompt      {:.2}\n  prompts needed                      {:.0}  (this design: {prompts})\n  prompt floor (infinitely many raters) {:.0}",
        closed.n_eff.ceil(),
        cluster::design_effect(a.expected_icc, m as f64),
        closed.prompts.ceil(),
        closed.floor.ceil()
    );
    let _ = writeln!(
        text,
        "  simulated power of the sign-flip test: {:.2} ({studies} studies, prompt logit SD {sd_prompt:.2}, rater logit SD {sd_rater:.2})",
        power
    );
    if resolvable {
        let _ = writeln!(text, "verdict: the design can resolve the stated effect.");
    } else {
        let _ = writeln!(
            text,
            "verdict: the design CANNOT reliably resolve the stated effect: {}",
            if (prompts as f64) < closed.floor.ceil() {
                format!(
                    "it has fewer prompts ({prompts}) than the floor ({:.0}), which no number of raters removes; add prompts",
                    closed.floor.ceil()
                )
            } else {
                "add prompts (more raters help only down to the floor)".to_string()
            }
        );
    }
    Ok(PlanReport {
        prompts,
        seeds,
        raters_per_prompt: per,
        closed_form: closed,
        sd_prompt,
        sd_rater,
        simulated_power: power,
        simulated_studies: studies,
        resolvable,
        text,
    })
}
