//! `flowlens study analyze` (STUDY.md 5.6): the unblinded judgments turned into every number
//! of the report. Per criterion and system pair: tally and shares, the win rate among decisive
//! votes with Wilson and Clopper-Pearson intervals and the naive exact test (labelled as
//! assuming independent votes), ICC / design effect / effective n, the primary clustered
//! inference (two-way cluster bootstrap interval from two seeds, prompt sign-flip p-value),
//! by-rater and by-prompt diagnostics, per-prompt and per-category breakdowns with a
//! heterogeneity statistic, agreement, and a no-exclusion sensitivity row; Holm across the
//! pre-registered family; a rater table with the pre-registered exclusions; position bias and
//! halo; Bradley-Terry for more than two systems. Deterministic given the study.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use flowlens_analysis::pref::{
    self, Interval, Level, Outcome, PairVote, Tally, Vote, agreement, bt, cluster,
};
use serde::{Deserialize, Serialize};

use super::design::StudyToml;
use super::files::{Key, Manifest, StudyDir, read_json};
use super::ratings::{self, RaterAnswers};

/// One rater's quality figures and the pre-registered exclusion verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaterRow {
    pub rater: String,
    pub main: usize,
    pub assigned: usize,
    pub gold: usize,
    pub gold_correct: usize,
    pub gold_accuracy: Option<f64>,
    pub repeats: usize,
    pub repeats_consistent: usize,
    /// Share of "left" among the rater's decisive main answers.
    pub left_share: Option<f64>,
    pub median_rt_ms: Option<i64>,
    /// Agreement with the majority of the other raters on the same screens.
    pub loo_agreement: Option<f64>,
    pub superseded: usize,
    /// The rules that exclude the rater (empty: included).
    pub excluded_by: Vec<String>,
}

/// The numbers of one criterion and system pair over one set of raters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairResult {
    pub criterion: String,
    pub a: String,
    pub b: String,
    pub raters: usize,
    pub prompts: usize,
    pub tally: Tally,
    /// (A, tie, B) shares of all judgments.
    pub shares: Option<(f64, f64, f64)>,
    pub win_rate: Option<f64>,
    pub half_score: Option<f64>,
    pub wilson: Option<Interval>,
    pub clopper_pearson: Option<Interval>,
    /// The exact two-sided sign test on all decisive votes: assumes independent votes.
    pub naive_p: Option<f64>,
    pub icc_prompt: Option<f64>,
    pub design_effect: Option<f64>,
    pub n_eff: Option<f64>,
    /// Primary: the two-way cluster bootstrap's percentile interval of the win rate.
    pub cluster_ci: Option<Interval>,
    /// The same interval from a second seed, and whether an endpoint moved by more than 0.005.
    pub cluster_ci_second_seed: Option<Interval>,
    pub cluster_ci_unstable: bool,
    pub tie_share_ci: Option<Interval>,
    /// Primary: the prompt-level sign-flip test.
    pub sign_flip_p: Option<f64>,
    pub sign_flip_exact: bool,
    pub holm_p: Option<f64>,
    pub by_rater: Option<cluster::ClusterT>,
    pub by_prompt: Option<cluster::ClusterT>,
    pub heterogeneity: Option<(f64, f64, f64)>,
    pub agreement: Option<AgreementRow>,
    pub per_prompt: Vec<PromptRow>,
    pub per_category: Vec<CategoryRow>,
    /// The same pair with every rater (no exclusions): p̂, cluster CI, sign-flip p.
    pub sensitivity: Option<Sensitivity>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sensitivity {
    pub raters: usize,
    pub tally: Tally,
    pub win_rate: Option<f64>,
    pub cluster_ci: Option<Interval>,
    pub sign_flip_p: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PromptRow {
    pub prompt: String,
    pub text: String,
    pub category: Option<String>,
    pub tally: Tally,
    pub win_rate: Option<f64>,
    pub wilson: Option<Interval>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategoryRow {
    pub category: String,
    pub prompts: usize,
    pub tally: Tally,
    pub win_rate: Option<f64>,
    pub wilson: Option<Interval>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgreementRow {
    pub raw: Option<f64>,
    pub fleiss_kappa: Option<f64>,
    pub alpha_nominal: Option<f64>,
    pub alpha_ordinal: Option<f64>,
    pub alpha_nominal_ci: Option<Interval>,
    /// Share of A among all labels (the prevalence that drives the kappa paradox).
    pub prevalence_a: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PositionBias {
    pub left: u64,
    pub decisive: u64,
    pub share: Option<f64>,
    pub wilson: Option<Interval>,
    pub p: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BtRow {
    pub criterion: String,
    pub systems: Vec<String>,
    /// The system the Elo scale is anchored at (1000): the baseline, else the first.
    pub reference: usize,
    /// The Davidson (1970) tie model's θ (mean 0) and tie parameter ν (point estimates).
    pub davidson: Option<(Vec<f64>, f64)>,
    pub fit: Option<pref::BtFit>,
    pub elo: Option<Vec<f64>>,
    pub error: Option<String>,
}

/// Everything `summary.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub study_id: String,
    pub manifest_sha256: String,
    pub flowlens_version: String,
    pub systems: Vec<String>,
    pub criteria: Vec<String>,
    pub raters_total: usize,
    pub raters_with_ratings: usize,
    pub raters_excluded: usize,
    /// Raters whose ratings came from `flowlens study simulate`, not from a person.
    pub simulated_raters: usize,
    pub prompts: usize,
    pub seeds: usize,
    pub level: f64,
    pub alpha: f64,
    pub bootstrap_rounds: usize,
    pub sign_flip_rounds: usize,
    pub seed: u64,
    pub exclusion_rules: super::design::ExclusionRules,
    pub raters: Vec<RaterRow>,
    pub pairs: Vec<PairResult>,
    pub position_bias: PositionBias,
    /// φ between the criteria's system choices on the same (rater, item), per pair of criteria.
    pub halo: Vec<(String, String, Option<f64>)>,
    pub bradley_terry: Vec<BtRow>,
    pub warnings: Vec<String>,
}

/// A judgment with its systems resolved.
struct Coded<'a> {
    rater: usize,
    prompt: usize,
    item: &'a str,
    criterion: &'a str,
    /// Indices of the systems shown left and right.
    left: usize,
    right: usize,
    choice: &'a str,
}

/// Runs the whole analysis. Needs the study to be locked and unblinded.
pub fn analyze(root: &std::path::Path) -> Result<Summary> {
    let study = StudyDir::open(root)?;
    let lock = study.require_lock("analyze")?;
    let spec: StudyToml = super::lock::check_locked(&study, &lock)?;
    if !super::lock::is_unblinded(&study) {
        bail!(
            "the study is still blind: run `flowlens study unblind {}` (recorded in the audit log) before analyzing",
            root.display()
        );
    }
    let manifest: Manifest = study.read_manifest()?;
    let key: Key = read_json(&study.key())?;
    let answers = ratings::load(&study, &spec, &manifest, &lock, None)?;
    if answers.is_empty() {
        bail!(
            "no ratings yet in {}: import the raters' files with `flowlens study import` or rate in the lab",
            study.ratings().display()
        );
    }
    let system_of = |id: &str| -> Result<usize> {
        let e = key
            .images
            .get(id)
            .with_context(|| format!("image {id} is not in key.json"))?;
        spec.system(&e.system)
            .with_context(|| format!("key.json names system `{}`, not in study.toml", e.system))
    };
    let prompt_index: BTreeMap<&str, usize> = manifest
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    let mut coded: Vec<Coded> = Vec::new();
    for (ri, r) in answers.iter().enumerate() {
        for j in r.answers.values() {
            if j.kind == "gold" {
                continue;
            }
            let item = manifest
                .item(&j.item)
                .context("an answered item is not in the manifest")?;
            coded.push(Coded {
                rater: ri,
                prompt: prompt_index[item.prompt.as_str()],
                item: &j.item,
                criterion: &j.criterion,
                left: system_of(&j.left)?,
                right: system_of(&j.right)?,
                choice: if j.kind == "repeat" {
                    "repeat"
                } else {
                    &j.choice
                },
            });
        }
    }
    let raters = rater_rows(&spec, &manifest, &answers, &coded, &system_of)?;
    let included: Vec<bool> = raters.iter().map(|r| r.excluded_by.is_empty()).collect();
    let a = &spec.analysis;
    let mut warnings = Vec::new();
    let mut pairs = Vec::new();
    for c in &spec.criteria {
        for &(sa, sb) in &spec.pairs() {
            let mut res = pair_result(
                &spec,
                &manifest,
                &coded,
                &c.id,
                sa,
                sb,
                |r| included[r],
                a.seed,
            )?;
            // The no-exclusion row: the same numbers when nobody is excluded.
            res.sensitivity = Some(if included.iter().all(|x| *x) {
                Sensitivity {
                    raters: res.raters,
                    tally: res.tally,
                    win_rate: res.win_rate,
                    cluster_ci: res.cluster_ci,
                    sign_flip_p: res.sign_flip_p,
                }
            } else {
                let v: Vec<Vote> = votes(&coded, &c.id, sa, sb, &|_| true)
                    .into_iter()
                    .map(|x| x.0)
                    .collect();
                let p = primary(&v, a, a.seed)?;
                let tally = cluster::tally(&v);
                Sensitivity {
                    raters: v.iter().map(|x| x.rater).max().map_or(0, |r| r + 1),
                    tally,
                    win_rate: tally.win_rate(),
                    cluster_ci: p.boot.map(|b| b.win_rate),
                    sign_flip_p: p.flip.map(|f| f.p_value),
                }
            });
            if res.cluster_ci_unstable {
                warnings.push(format!(
                    "{} {} vs {}: the cluster bootstrap's interval moved by more than 0.005 between two seeds; raise analysis.bootstrap_rounds",
                    c.id, res.a, res.b
                ));
            }
            pairs.push(res);
        }
    }
    // Holm over the pre-registered family: primary criteria x pairs.
    let family: Vec<usize> = (0..pairs.len())
        .filter(|&i| a.primary.contains(&pairs[i].criterion) && pairs[i].sign_flip_p.is_some())
        .collect();
    let adjusted = pref::holm(
        &family
            .iter()
            .map(|&i| pairs[i].sign_flip_p.unwrap())
            .collect::<Vec<_>>(),
    );
    for (&i, p) in family.iter().zip(adjusted) {
        pairs[i].holm_p = Some(p);
    }
    // Position bias: left among decisive main answers of included raters.
    let (mut left, mut decisive) = (0u64, 0u64);
    for x in coded
        .iter()
        .filter(|x| included[x.rater] && x.choice != "repeat")
    {
        match x.choice {
            "left" => {
                left += 1;
                decisive += 1
            }
            "right" => decisive += 1,
            _ => {}
        }
    }
    let position_bias = PositionBias {
        left,
        decisive,
        share: (decisive > 0).then(|| left as f64 / decisive as f64),
        wilson: pref::wilson(left, decisive, a.level),
        p: pref::sign_test(left, decisive),
    };
    let halo = halo(&spec, &coded, &included);
    let bradley_terry = if spec.systems.len() > 2 {
        spec.criteria
            .iter()
            .map(|c| bt_row(&spec, &coded, &c.id, &included))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Summary {
        study_id: manifest.study_id.clone(),
        manifest_sha256: lock.manifest_sha256.clone(),
        flowlens_version: env!("CARGO_PKG_VERSION").into(),
        systems: spec.systems.iter().map(|s| s.name.clone()).collect(),
        criteria: spec.criteria.iter().map(|c| c.id.clone()).collect(),
        raters_total: manifest.raters.len(),
        raters_with_ratings: answers.len(),
        raters_excluded: included.iter().filter(|x| !**x).count(),
        simulated_raters: answers.iter().filter(|a| a.client == "simulated").count(),
        prompts: manifest.prompts.len(),
        seeds: manifest.seeds.len(),
        level: a.level,
        alpha: a.alpha,
        bootstrap_rounds: a.bootstrap_rounds,
        sign_flip_rounds: a.sign_flip_rounds,
        seed: a.seed,
        exclusion_rules: a.exclude.clone(),
        raters,
        pairs,
        position_bias,
        halo,
        bradley_terry,
        warnings,
    })
}

fn rater_rows(
    spec: &StudyToml,
    manifest: &Manifest,
    answers: &[RaterAnswers],
    coded: &[Coded],
    system_of: &dyn Fn(&str) -> Result<usize>,
) -> Result<Vec<RaterRow>> {
    let rules = &spec.analysis.exclude;
    // Labels per (item, criterion) screen for leave-one-out agreement: 0 = first system of
    // the screen's pair lost, 1 = tie, 2 = won.
    let mut units: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for x in coded.iter().filter(|x| x.choice != "repeat") {
        let n = units.len();
        units.entry((x.item, x.criterion)).or_insert(n);
    }
    let mut table = vec![vec![None; units.len()]; answers.len()];
    for x in coded.iter().filter(|x| x.choice != "repeat") {
        let a_left = x.left < x.right;
        let label = match (x.choice, a_left) {
            ("left", true) | ("right", false) => 2,
            ("left", false) | ("right", true) => 0,
            _ => 1,
        };
        table[x.rater][units[&(x.item, x.criterion)]] = Some(label);
    }
    let loo = agreement::leave_one_out(&table, 3);
    answers
        .iter()
        .enumerate()
        .map(|(ri, r)| {
            let code = &r.rater;
            let assigned = manifest.rater(code).map_or(0, |x| x.tasks.len());
            let mut gold = 0;
            let mut gold_correct = 0;
            let (mut left, mut decisive) = (0usize, 0usize);
            let mut main = 0;
            for j in r.answers.values() {
                match j.kind.as_str() {
                    "gold" => {
                        gold += 1;
                        gold_correct += ratings::gold_correct(manifest, j) as usize;
                    }
                    "main" => {
                        main += 1;
                        if j.choice == "left" || j.choice == "right" {
                            decisive += 1;
                            left += (j.choice == "left") as usize;
                        }
                    }
                    _ => {}
                }
            }
            // Test-retest: the system chosen (or a tie) on a repeat vs its original.
            let pick = |j: &super::page::Judgment| -> Result<Option<usize>> {
                Ok(match j.choice.as_str() {
                    "left" => Some(system_of(&j.left)?),
                    "right" => Some(system_of(&j.right)?),
                    _ => None,
                })
            };
            let (mut repeats, mut consistent) = (0, 0);
            for rep in r.answers.values().filter(|j| j.kind == "repeat") {
                if let Some(orig) = r.answers.values().find(|j| {
                    j.kind == "main" && j.item == rep.item && j.criterion == rep.criterion
                }) {
                    repeats += 1;
                    consistent += (pick(rep)? == pick(orig)?) as usize;
                }
            }
            let gold_accuracy = (gold > 0).then(|| gold_correct as f64 / gold as f64);
            let left_share = (decisive > 0).then(|| left as f64 / decisive as f64);
            let median_rt_ms = ratings::median_rt_ms(r.answers.values());
            let mut excluded_by = Vec::new();
            if rules.gold_accuracy_below > 0.0
                && gold >= rules.gold_min_items.max(1)
                && gold_accuracy.is_some_and(|g| g < rules.gold_accuracy_below)
            {
                excluded_by.push(format!(
                    "gold accuracy {:.2} < {} on {gold} gold items",
                    gold_accuracy.unwrap_or(0.0),
                    rules.gold_accuracy_below
                ));
            }
            if rules.median_rt_below_ms > 0
                && median_rt_ms.is_some_and(|m| m < rules.median_rt_below_ms as i64)
            {
                excluded_by.push(format!(
                    "median response time {} ms < {} ms",
                    median_rt_ms.unwrap_or(0),
                    rules.median_rt_below_ms
                ));
            }
            if rules.same_side_at_least > 0.0
                && left_share.is_some_and(|s| s.max(1.0 - s) >= rules.same_side_at_least)
            {
                excluded_by.push(format!(
                    "{:.0} % of decisive answers on one side (>= {:.0} %)",
                    100.0 * left_share.map_or(0.0, |s| s.max(1.0 - s)),
                    100.0 * rules.same_side_at_least
                ));
            }
            Ok(RaterRow {
                rater: code.clone(),
                main,
                assigned,
                gold,
                gold_correct,
                gold_accuracy,
                repeats,
                repeats_consistent: consistent,
                left_share,
                median_rt_ms,
                loo_agreement: loo[ri],
                superseded: r.superseded,
                excluded_by,
            })
        })
        .collect()
}

/// Votes of `criterion` and pair (sa, sb) from the raters `keep` accepts; raters re-indexed
/// densely.
fn votes(
    coded: &[Coded],
    criterion: &str,
    sa: usize,
    sb: usize,
    keep: &dyn Fn(usize) -> bool,
) -> Vec<(Vote, usize)> {
    let mut dense: BTreeMap<usize, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for x in coded {
        if x.choice == "repeat" || x.criterion != criterion || !keep(x.rater) {
            continue;
        }
        let a_left = if (x.left, x.right) == (sa, sb) {
            true
        } else if (x.left, x.right) == (sb, sa) {
            false
        } else {
            continue;
        };
        let outcome = match (x.choice, a_left) {
            ("left", true) | ("right", false) => Outcome::A,
            ("left", false) | ("right", true) => Outcome::B,
            _ => Outcome::Tie,
        };
        let n = dense.len();
        let rater = *dense.entry(x.rater).or_insert(n);
        out.push((
            Vote {
                prompt: x.prompt,
                rater,
                outcome,
            },
            x.rater,
        ));
    }
    out
}

/// The primary inference of some votes: the two-way cluster bootstrap from two seeds (none
/// without a decisive vote) and the prompt sign-flip test (none without a vote).
struct Primary {
    boot: Option<cluster::ClusterBootstrap>,
    boot2: Option<cluster::ClusterBootstrap>,
    flip: Option<cluster::SignFlip>,
}

fn primary(v: &[Vote], a: &super::design::AnalysisSpec, seed: u64) -> Result<Primary> {
    let boot = |seed: u64| -> Result<Option<cluster::ClusterBootstrap>> {
        if v.iter().all(|x| x.outcome == Outcome::Tie) {
            return Ok(None);
        }
        Ok(Some(cluster::cluster_bootstrap(
            v,
            a.bootstrap_rounds,
            seed,
            a.level,
        )?))
    };
    Ok(Primary {
        boot: boot(seed)?,
        boot2: boot(seed.wrapping_add(1))?,
        flip: if v.is_empty() {
            None
        } else {
            Some(cluster::sign_flip(v, a.sign_flip_rounds, seed)?)
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn pair_result(
    spec: &StudyToml,
    manifest: &Manifest,
    coded: &[Coded],
    criterion: &str,
    sa: usize,
    sb: usize,
    keep: impl Fn(usize) -> bool,
    seed: u64,
) -> Result<PairResult> {
    let a = &spec.analysis;
    let with_raters = votes(coded, criterion, sa, sb, &keep);
    let v: Vec<Vote> = with_raters.iter().map(|x| x.0).collect();
    let t = cluster::tally(&v);
    let raters = v
        .iter()
        .map(|x| x.rater)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let prompts_seen = v
        .iter()
        .map(|x| x.prompt)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let decisive: Vec<Vote> = v
        .iter()
        .copied()
        .filter(|x| x.outcome != Outcome::Tie)
        .collect();
    let Primary { boot, boot2, flip } = primary(&v, a, seed)?;
    let unstable = match (&boot, &boot2) {
        (Some(x), Some(y)) => {
            (x.win_rate.lower - y.win_rate.lower).abs() > 0.005
                || (x.win_rate.upper - y.win_rate.upper).abs() > 0.005
        }
        _ => false,
    };
    // ICC of the A-or-B outcome within prompt clusters (decisive votes).
    let mut groups: Vec<Vec<f64>> = vec![Vec::new(); manifest.prompts.len()];
    for x in &decisive {
        groups[x.prompt].push((x.outcome == Outcome::A) as u8 as f64);
    }
    let icc = cluster::icc_anova(&groups);
    let clusters = groups.iter().filter(|g| !g.is_empty()).count();
    let mean_size = (clusters > 0).then(|| decisive.len() as f64 / clusters as f64);
    let deff = icc
        .zip(mean_size)
        .map(|(i, m)| cluster::design_effect(i, m));
    let n_eff = deff.map(|d| decisive.len() as f64 / d);
    // Per prompt.
    let mut per: Vec<Tally> = vec![Tally::default(); manifest.prompts.len()];
    for x in &v {
        let t = &mut per[x.prompt];
        match x.outcome {
            Outcome::A => t.a += 1,
            Outcome::B => t.b += 1,
            Outcome::Tie => t.ties += 1,
        }
    }
    let per_prompt: Vec<PromptRow> = manifest
        .prompts
        .iter()
        .zip(&per)
        .filter(|(_, t)| t.total() > 0)
        .map(|(p, t)| PromptRow {
            prompt: p.id.clone(),
            text: p.text.clone(),
            category: p.category.clone(),
            tally: *t,
            win_rate: t.win_rate(),
            wilson: pref::wilson(t.a, t.decisive(), a.level),
        })
        .collect();
    let heterogeneity = cluster::heterogeneity(
        &per.iter().map(|t| t.a).collect::<Vec<_>>(),
        &per.iter().map(|t| t.decisive()).collect::<Vec<_>>(),
    );
    let mut cats: BTreeMap<String, (usize, Tally)> = BTreeMap::new();
    for row in &per_prompt {
        if let Some(c) = &row.category {
            let e = cats.entry(c.clone()).or_default();
            e.0 += 1;
            e.1.a += row.tally.a;
            e.1.b += row.tally.b;
            e.1.ties += row.tally.ties;
        }
    }
    let per_category = cats
        .into_iter()
        .map(|(category, (prompts, t))| CategoryRow {
            category,
            prompts,
            tally: t,
            win_rate: t.win_rate(),
            wilson: pref::wilson(t.a, t.decisive(), a.level),
        })
        .collect();
    // Agreement on (item) units of this criterion and pair, labels B = 0, tie = 1, A = 2.
    let agreement = {
        let mut unit_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut rows: BTreeMap<usize, Vec<Option<usize>>> = BTreeMap::new();
        let mut cells = Vec::new();
        for (x, (vote, _)) in coded
            .iter()
            .filter(|x| {
                x.choice != "repeat"
                    && x.criterion == criterion
                    && keep(x.rater)
                    && ((x.left, x.right) == (sa, sb) || (x.left, x.right) == (sb, sa))
            })
            .zip(&with_raters)
        {
            let n = unit_of.len();
            let u = *unit_of.entry(x.item).or_insert(n);
            let label = match vote.outcome {
                Outcome::B => 0,
                Outcome::Tie => 1,
                Outcome::A => 2,
            };
            cells.push((vote.rater, u, label));
        }
        for &(r, u, l) in &cells {
            let row = rows.entry(r).or_insert_with(|| vec![None; unit_of.len()]);
            row[u] = Some(l);
        }
        let data: Vec<Vec<Option<usize>>> = rows.into_values().collect();
        let mut counts = vec![vec![0u64; 3]; unit_of.len()];
        for &(_, u, l) in &cells {
            counts[u][l] += 1;
        }
        (!cells.is_empty()).then(|| AgreementRow {
            raw: agreement::raw_agreement(&counts),
            fleiss_kappa: agreement::fleiss(&counts).map(|f| f.kappa),
            alpha_nominal: agreement::krippendorff(&data, 3, Level::Nominal),
            alpha_ordinal: agreement::krippendorff(&data, 3, Level::Ordinal),
            alpha_nominal_ci: agreement::krippendorff_rater_bootstrap(
                &data,
                3,
                Level::Nominal,
                1000,
                seed,
                a.level,
            ),
            prevalence_a: Some(
                cells.iter().filter(|c| c.2 == 2).count() as f64 / cells.len() as f64,
            ),
        })
    };
    Ok(PairResult {
        criterion: criterion.into(),
        a: spec.systems[sa].name.clone(),
        b: spec.systems[sb].name.clone(),
        raters,
        prompts: prompts_seen,
        tally: t,
        shares: t.shares(),
        win_rate: t.win_rate(),
        half_score: t.half_score(),
        wilson: pref::wilson(t.a, t.decisive(), a.level),
        clopper_pearson: pref::clopper_pearson(t.a, t.decisive(), a.level),
        naive_p: pref::sign_test(t.a, t.decisive()),
        icc_prompt: icc,
        design_effect: deff,
        n_eff,
        cluster_ci: boot.as_ref().map(|b| b.win_rate),
        cluster_ci_second_seed: boot2.as_ref().map(|b| b.win_rate),
        cluster_ci_unstable: unstable,
        tie_share_ci: boot.as_ref().map(|b| b.tie_share),
        sign_flip_p: flip.as_ref().map(|f| f.p_value),
        sign_flip_exact: flip.as_ref().is_some_and(|f| f.exact),
        holm_p: None,
        by_rater: cluster::cluster_t(&v, true),
        by_prompt: cluster::cluster_t(&v, false),
        heterogeneity,
        agreement,
        per_prompt,
        per_category,
        sensitivity: None,
    })
}

fn halo(
    spec: &StudyToml,
    coded: &[Coded],
    included: &[bool],
) -> Vec<(String, String, Option<f64>)> {
    let mut out = Vec::new();
    for (i, c1) in spec.criteria.iter().enumerate() {
        for c2 in &spec.criteria[i + 1..] {
            // (rater, item) -> did the lower-indexed system win, per criterion.
            let pick = |c: &str| -> BTreeMap<(usize, &str), bool> {
                coded
                    .iter()
                    .filter(|x| x.choice != "repeat" && x.criterion == c && included[x.rater])
                    .filter_map(|x| {
                        let first_left = x.left < x.right;
                        match x.choice {
                            "left" => Some(((x.rater, x.item), first_left)),
                            "right" => Some(((x.rater, x.item), !first_left)),
                            _ => None,
                        }
                    })
                    .collect()
            };
            let (p1, p2) = (pick(&c1.id), pick(&c2.id));
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for (k, x) in &p1 {
                if let Some(y) = p2.get(k) {
                    xs.push(*x);
                    ys.push(*y);
                }
            }
            out.push((c1.id.clone(), c2.id.clone(), cluster::phi(&xs, &ys)));
        }
    }
    out
}

fn bt_row(spec: &StudyToml, coded: &[Coded], criterion: &str, included: &[bool]) -> BtRow {
    let names: Vec<String> = spec.systems.iter().map(|s| s.name.clone()).collect();
    let mut dense: BTreeMap<usize, usize> = BTreeMap::new();
    let votes: Vec<PairVote> = coded
        .iter()
        .filter(|x| x.choice != "repeat" && x.criterion == criterion && included[x.rater])
        .map(|x| {
            let n = dense.len();
            let rater = *dense.entry(x.rater).or_insert(n);
            PairVote {
                prompt: x.prompt,
                rater,
                first: x.left,
                second: x.right,
                outcome: match x.choice {
                    "left" => Outcome::A,
                    "right" => Outcome::B,
                    _ => Outcome::Tie,
                },
            }
        })
        .collect();
    let k = names.len();
    let (mut strict, mut ties) = (vec![vec![0.0; k]; k], vec![vec![0.0; k]; k]);
    for v in &votes {
        match v.outcome {
            Outcome::A => strict[v.first][v.second] += 1.0,
            Outcome::B => strict[v.second][v.first] += 1.0,
            Outcome::Tie => {
                ties[v.first][v.second] += 1.0;
                ties[v.second][v.first] += 1.0;
            }
        }
    }
    let davidson = bt::fit_davidson(&strict, &ties, &names).ok();
    let a = &spec.analysis;
    match bt::fit_with_intervals(
        names.len(),
        &votes,
        &names,
        a.bootstrap_rounds.min(2000),
        a.seed,
        a.level,
    ) {
        Ok(fit) => {
            let reference = spec
                .baseline
                .as_deref()
                .and_then(|b| spec.system(b))
                .unwrap_or(0);
            BtRow {
                criterion: criterion.into(),
                systems: names,
                reference,
                davidson,
                elo: Some(bt::elo(&fit.theta, reference)),
                fit: Some(fit),
                error: None,
            }
        }
        Err(e) => BtRow {
            criterion: criterion.into(),
            systems: names,
            reference: 0,
            davidson: None,
            fit: None,
            elo: None,
            error: Some(e.to_string()),
        },
    }
}
