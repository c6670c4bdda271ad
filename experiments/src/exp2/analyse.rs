//! Experiment 2 (paper section 7.2): the same trained dual-stream encoder under two decoders. At
//! every solver step, CKA between the layer-normalised pooled text and noise streams of the
//! encoder across prompts; each seed's curve is summarised by its AUC over normalised time and
//! its time-to-threshold, aggregated as mean +- SE over seeds. Over prompts (one resample of the
//! prompts shared by every step, seed and system): bootstrap intervals of each step's mean
//! curve value, the AUC and the time-to-threshold; each curve point and AUC against the pairing
//! null (text and noise streams of different prompts paired); the AUC and time differences
//! between the systems against the swap null (each prompt's features of the two systems
//! exchanged, at every step and seed alike).

use anyhow::{Result, bail};
use flowlens_analysis::CkaTerms;
use flowlens_analysis::cka::{Estimator, PerEstimator};
use flowlens_analysis::curves::{self, CurveSummary, summarise_curves};
use flowlens_analysis::inference::{
    Inferred, NullKind, Replicates, Resamples, infer, mean_of, value,
};
use flowlens_core::store::FeatureStore;
use serde::{Deserialize, Serialize};

use crate::exp1::analyse::{LEVEL, paired_grams, unit_value};
use crate::exp2::config::Exp2;

serde_with::with_prefix!(curves_ "curves_");
serde_with::with_prefix!(summary_ "summary_");

/// One decoder condition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Condition {
    /// `single-stream decoder` or `ConvNeXt decoder`.
    pub name: String,
    pub run: String,
    pub checkpoint_step: usize,
    /// `curves[seed][step]` per estimator (written as `curves_biased`, `curves_debiased`).
    #[serde(flatten, with = "curves_")]
    pub curves: PerEstimator<Vec<Vec<f64>>>,
    #[serde(flatten, with = "summary_")]
    pub summary: PerEstimator<CurveSummary>,
    /// Over prompts, per estimator.
    pub inference: PerEstimator<CurveInference>,
}

/// One system's curve over prompts (means over seeds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CurveInference {
    /// Each step's mean curve value, against its pairing null.
    pub curve: Vec<Inferred>,
    /// The mean AUC, against the pairing null.
    pub auc: Inferred,
    /// The mean time-to-threshold (`None`: not every seed's curve reaches the threshold);
    /// resamples on which some seed's curve does not reach it are dropped.
    pub time_to_threshold: Option<Inferred>,
}

/// The difference between the first system and another (first - other), over prompts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    pub first: String,
    pub other: String,
    /// ΔAUC against the swap null.
    pub delta_auc: Inferred,
    /// Δ time-to-threshold with its interval (`None`: undefined on the full sample). No null:
    /// the swap null of a crossing time is degenerate (mixed systems cross at the first step
    /// or not at all).
    pub delta_time: Option<Inferred>,
}

/// `exp2/results.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Results {
    pub format: String,
    /// Normalised solver time of each step (`t_k = k / steps`).
    pub ts: Vec<f64>,
    pub seeds: Vec<u64>,
    pub n_prompts: usize,
    pub threshold: f64,
    pub estimator: String,
    pub pooling: String,
    pub cfg: f32,
    /// The encoder tensors compared bit for bit between the two systems.
    pub encoder_tensors_identical: usize,
    pub conditions: Vec<Condition>,
    /// The first system against each other one, per estimator.
    pub comparisons: Vec<PerEstimator<Comparison>>,
    /// Permutations of each null and bootstrap resamples (0 = not computed), the level.
    pub permutations: usize,
    pub bootstrap: usize,
    pub level: f64,
}

/// The units of two systems: `units[step * seeds + seed]`, text vs noise of each.
fn units(
    a: &FeatureStore,
    b: &FeatureStore,
    seeds: &[u64],
    draw: &Resamples,
) -> Result<Vec<Replicates>> {
    let mut out = Vec::new();
    for step in 0..a.manifest.steps {
        for &seed in seeds {
            let unit = paired_grams(
                (a, "enc.text", "enc.noise"),
                (b, "enc.text", "enc.noise"),
                seed,
                step,
            )?;
            out.push(unit.replicates(draw));
        }
    }
    Ok(out)
}

/// `curves[seed][step]` of system `m` of the units, per estimator.
fn curves(reps: &[Replicates], m: usize, seeds: usize) -> Result<PerEstimator<Vec<Vec<f64>>>> {
    let mut out = PerEstimator::<Vec<Vec<f64>>>::default();
    for e in Estimator::BOTH {
        let mut c = vec![Vec::new(); seeds];
        for (u, r) in reps.iter().enumerate() {
            c[u % seeds].push(unit_value(&r.full, m, e, "enc.text")?);
        }
        *out.get_mut(e) = c;
    }
    Ok(out)
}

/// Per-seed curves of system `m` from one resample's units (`None`: a value undefined).
fn seed_curves(u: &[[CkaTerms; 2]], m: usize, seeds: usize, e: Estimator) -> Option<Vec<Vec<f64>>> {
    let mut c = vec![Vec::with_capacity(u.len() / seeds); seeds];
    for (i, t) in u.iter().enumerate() {
        c[i % seeds].push(value(&t[m], e)?);
    }
    Some(c)
}

/// Mean AUC and mean time-to-threshold of system `m`'s curves.
fn auc_of(ts: &[f64], u: &[[CkaTerms; 2]], m: usize, seeds: usize, e: Estimator) -> Option<f64> {
    let c = seed_curves(u, m, seeds, e)?;
    mean_of(c.iter().map(|c| curves::auc(ts, c).ok()))
}

fn time_of(
    ts: &[f64],
    u: &[[CkaTerms; 2]],
    m: usize,
    seeds: usize,
    e: Estimator,
    threshold: f64,
) -> Option<f64> {
    let c = seed_curves(u, m, seeds, e)?;
    mean_of(c.iter().map(|c| {
        curves::time_to_threshold(ts, c, threshold)
            .ok()
            .and_then(|x| x.time())
    }))
}

/// `infer`, or `None` where the statistic is undefined on the full sample.
fn infer_if(
    reps: &[Replicates],
    e: Estimator,
    stat: impl Fn(&[[CkaTerms; 2]]) -> Option<f64> + Sync,
    null: NullKind,
) -> Result<Option<Inferred>> {
    let full: Vec<[CkaTerms; 2]> = reps.iter().map(|r| r.full).collect();
    if stat(&full).is_none() {
        return Ok(None);
    }
    Ok(Some(infer(reps, e, stat, null, LEVEL)?))
}

/// System `m`'s curve, AUC and time over prompts.
fn curve_inference(
    reps: &[Replicates],
    m: usize,
    ts: &[f64],
    seeds: usize,
    e: Estimator,
    threshold: f64,
) -> Result<CurveInference> {
    let steps = ts.len();
    let curve = (0..steps)
        .map(|k| {
            let units = &reps[k * seeds..(k + 1) * seeds];
            infer(
                units,
                e,
                |u| mean_of(u.iter().map(|t| value(&t[m], e))),
                NullKind::Pairing,
                LEVEL,
            )
        })
        .collect::<flowlens_analysis::error::Result<Vec<_>>>()?;
    Ok(CurveInference {
        curve,
        auc: infer(
            reps,
            e,
            |u| auc_of(ts, u, m, seeds, e),
            NullKind::Pairing,
            LEVEL,
        )?,
        time_to_threshold: infer_if(
            reps,
            e,
            |u| time_of(ts, u, m, seeds, e, threshold),
            NullKind::None,
        )?,
    })
}

/// Computes the experiment from the two systems' feature stores (`conditions`: name and store).
pub fn analyse(
    conditions: &[(&str, &FeatureStore)],
    config: &Exp2,
    encoder_tensors_identical: usize,
) -> Result<Results> {
    let first = conditions[0].1;
    for (_, s) in conditions {
        if s.manifest.prompts != first.manifest.prompts || s.manifest.steps != first.manifest.steps
        {
            bail!(
                "{} and {} were sampled with different prompts or solver steps",
                first.dir().display(),
                s.dir().display()
            );
        }
    }
    let steps = first.manifest.steps;
    if steps < 2 {
        bail!("experiment 2 needs at least 2 solver steps for a curve");
    }
    let ts: Vec<f64> = (0..steps).map(|k| k as f64 / steps as f64).collect();
    let seeds = &config.probing.seeds;
    let n = first.manifest.prompts.len();
    let draw = Resamples::draw(
        n,
        config.bootstrap,
        config.permutations,
        config.resample_seed,
    );
    let k = seeds.len();
    let mut out = Vec::new();
    let mut comparisons = Vec::new();
    // Each system against the first (the first against itself when it is alone).
    let others: Vec<usize> = if conditions.len() > 1 {
        (1..conditions.len()).collect()
    } else {
        vec![0]
    };
    for &o in &others {
        let reps = units(first, conditions[o].1, seeds, &draw)?;
        // (model index in these units, condition): the first condition's curves come from its
        // units with the second (or with itself when alone), every other from its own pair.
        let pair = if o == 0 {
            vec![(0, 0)]
        } else if o == 1 {
            vec![(0, 0), (1, 1)]
        } else {
            vec![(1, o)]
        };
        for (m, c) in pair {
            let (name, store) = conditions[c];
            let curves = curves(&reps, m, k)?;
            out.push(Condition {
                name: name.to_string(),
                run: store.dir().display().to_string(),
                checkpoint_step: store.manifest.checkpoint_step,
                summary: PerEstimator::new(
                    summarise_curves(&ts, &curves.biased, config.threshold)?,
                    summarise_curves(&ts, &curves.debiased, config.threshold)?,
                ),
                inference: PerEstimator::new(
                    curve_inference(&reps, m, &ts, k, Estimator::Biased, config.threshold)?,
                    curve_inference(&reps, m, &ts, k, Estimator::Debiased, config.threshold)?,
                ),
                curves,
            });
        }
        if o > 0 {
            let compare = |e: Estimator| -> Result<Comparison> {
                Ok(Comparison {
                    first: conditions[0].0.to_string(),
                    other: conditions[o].0.to_string(),
                    delta_auc: infer(
                        &reps,
                        e,
                        |u| Some(auc_of(&ts, u, 0, k, e)? - auc_of(&ts, u, 1, k, e)?),
                        NullKind::Swap,
                        LEVEL,
                    )?,
                    delta_time: infer_if(
                        &reps,
                        e,
                        |u| {
                            let t = config.threshold;
                            Some(time_of(&ts, u, 0, k, e, t)? - time_of(&ts, u, 1, k, e, t)?)
                        },
                        NullKind::None,
                    )?,
                })
            };
            comparisons.push(PerEstimator::new(
                compare(Estimator::Biased)?,
                compare(Estimator::Debiased)?,
            ));
        }
    }
    Ok(Results {
        format: "flowlens.exp2.v2".into(),
        ts,
        seeds: seeds.clone(),
        n_prompts: first.manifest.prompts.len(),
        threshold: config.threshold,
        estimator: config.estimator.name().into(),
        pooling: first.manifest.pooling.name().into(),
        cfg: first.manifest.cfg,
        encoder_tensors_identical,
        conditions: out,
        comparisons,
        permutations: config.permutations,
        bootstrap: config.bootstrap,
        level: LEVEL,
    })
}
