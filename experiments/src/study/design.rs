//! `study.toml`: the design of a preference study and its pre-registered analysis (format in
//! docs/STUDY_FORMAT.md). Written by `flowlens study new` from its flags, editable by hand
//! until `flowlens study lock` freezes it.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

/// The study file's format version.
pub const FORMAT: u32 = 1;

/// A whole `study.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyToml {
    pub format: u32,
    /// The study's name (also its id in ratings files).
    pub name: String,
    /// Every random choice of the design (image ids, order, sides, gold, repeats) follows it.
    pub seed: u64,
    pub systems: Vec<SystemSpec>,
    /// The system every other one is compared with (reference design); absent: round robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    pub prompts: PromptsSpec,
    pub sampler: SamplerSpec,
    pub raters: RatersSpec,
    pub protocol: ProtocolSpec,
    pub criteria: Vec<Criterion>,
    pub analysis: AnalysisSpec,
}

/// One system: a run directory at a checkpoint, or a folder of images from any model
/// (`p<prompt index:04>_<seed>.png`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// `latest`, `best` or a step (run systems).
    #[serde(default = "latest")]
    pub checkpoint: String,
    /// `ema`, `ema2` or `model` (run systems).
    #[serde(default = "ema")]
    pub weights: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<String>,
}

fn latest() -> String {
    "latest".into()
}
fn ema() -> String {
    "ema".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsSpec {
    /// One prompt per line, or a TSV with a header holding `Prompt` (and optionally
    /// `Category`, as PartiPrompts.tsv has).
    pub file: String,
    #[serde(default = "one")]
    pub seeds_per_prompt: usize,
    /// The first seed; a prompt's seeds are `first_seed..first_seed + seeds_per_prompt`.
    #[serde(default)]
    pub first_seed: u64,
    /// How many prompts of the file the study uses (0: all).
    #[serde(default)]
    pub count: usize,
    /// How `count` prompts are chosen: `first`, `random` or `stratified` (by category,
    /// proportionally), with the study seed.
    #[serde(default = "first")]
    pub select: String,
}

fn first() -> String {
    "first".into()
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    pub steps: usize,
    pub cfg: f32,
    /// Prompts per forward pass while generating (does not change the images).
    #[serde(default = "eight")]
    pub batch_size: usize,
}

fn eight() -> usize {
    8
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatersSpec {
    pub count: usize,
    /// Ratings per pair in a balanced incomplete design; 0 (or >= count): fully crossed.
    #[serde(default)]
    pub ratings_per_pair: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSpec {
    /// `["left", "right", "tie"]` (default), `["left", "right"]` (2AFC) or with `"both_bad"`.
    pub responses: Vec<String>,
    pub min_view_ms: u64,
    /// Share of gold items per rater and its floor.
    pub gold_share: f64,
    pub gold_min: usize,
    /// Share of side-swapped repeats per rater, its floor, and the least distance to the
    /// original.
    pub repeat_share: f64,
    pub repeat_min: usize,
    pub repeat_gap: usize,
    pub title: String,
    pub instructions: String,
    pub consent: String,
    #[serde(default)]
    pub completion_code: String,
}

/// One question asked of every pair, on its own screen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub id: String,
    pub question: String,
    pub show_prompt: bool,
    /// Gold items of this criterion: `degraded` (an image vs a blurred, JPEG-crushed, noisy
    /// copy of itself), `mismatch` (the prompt's image vs the same system's image of another
    /// prompt) or `none`.
    pub gold: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSpec {
    /// Criteria whose primary p-values form the Holm family (with every system pair).
    pub primary: Vec<String>,
    pub alpha: f64,
    pub level: f64,
    pub bootstrap_rounds: usize,
    pub sign_flip_rounds: usize,
    pub seed: u64,
    /// The share the study should be able to resolve (the planner's p1).
    pub expected_share: f64,
    /// The prompt ICC the planner assumes.
    pub expected_icc: f64,
    pub exclude: ExclusionRules,
}

/// Pre-registered rater exclusions; a rule is off when its field is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionRules {
    pub gold_accuracy_below: f64,
    pub gold_min_items: usize,
    pub median_rt_below_ms: u64,
    pub same_side_at_least: f64,
}

impl StudyToml {
    /// The defaults of STUDY.md section 5.3 around the given systems, prompts and raters.
    pub fn new(name: &str, systems: Vec<SystemSpec>, prompts: &str, raters: usize) -> Self {
        let baseline = (systems.len() == 2).then(|| systems[1].name.clone());
        Self {
            format: FORMAT,
            name: name.into(),
            seed: 1,
            systems,
            baseline,
            prompts: PromptsSpec {
                file: prompts.into(),
                seeds_per_prompt: 1,
                first_seed: 0,
                count: 0,
                select: first(),
            },
            sampler: SamplerSpec {
                steps: 30,
                cfg: 2.0,
                batch_size: 8,
            },
            raters: RatersSpec {
                count: raters,
                ratings_per_pair: 0,
            },
            protocol: ProtocolSpec {
                responses: vec!["left".into(), "right".into(), "tie".into()],
                min_view_ms: 1000,
                gold_share: 0.1,
                gold_min: 4,
                repeat_share: 0.05,
                repeat_min: 2,
                repeat_gap: 10,
                title: "Which image is better?".into(),
                instructions: "You will see pairs of images made from the same text. For each pair, answer the question above the images: pick the left image, the right image, or a tie when you cannot choose.\n\nTake your time; there are no right answers except on a few check items. Keys 1, 2 and 3 choose left, right and tie; U undoes the last answer.".into(),
                consent: "Your answers are recorded with a response time and your rater code, and nothing else about you. By starting you agree that they are used for research.".into(),
                completion_code: String::new(),
            },
            criteria: vec![
                Criterion {
                    id: "aesthetics".into(),
                    question: "Which image looks better as a picture (composition, lighting, detail, fewer artefacts)? Ignore the text.".into(),
                    show_prompt: false,
                    gold: "degraded".into(),
                },
                Criterion {
                    id: "prompt_following".into(),
                    question: "Which image matches the text better? Check every object, attribute, count and position.".into(),
                    show_prompt: true,
                    gold: "mismatch".into(),
                },
            ],
            analysis: AnalysisSpec {
                primary: vec!["aesthetics".into(), "prompt_following".into()],
                alpha: 0.05,
                level: 0.95,
                bootstrap_rounds: 10_000,
                sign_flip_rounds: 10_000,
                seed: 1,
                expected_share: 0.65,
                expected_icc: 0.1,
                exclude: ExclusionRules {
                    gold_accuracy_below: 0.8,
                    gold_min_items: 5,
                    median_rt_below_ms: 1000,
                    same_side_at_least: 0.9,
                },
            },
        }
    }

    /// Reads and checks `path`, naming the field at fault.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the study file {}", path.display()))?;
        let de = toml::Deserializer::parse(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let s: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow::anyhow!("{}: field `{}`: {}", path.display(), e.path(), e.inner())
        })?;
        s.check().with_context(|| format!("{}", path.display()))?;
        Ok(s)
    }

    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// The design part (everything but `[analysis]`), as canonical JSON: what `study lock`
    /// compares with the design the images and assignments were made from.
    pub fn design_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("plain data");
        v.as_object_mut().expect("object").remove("analysis");
        v.to_string()
    }

    /// Index of a system by name.
    pub fn system(&self, name: &str) -> Option<usize> {
        self.systems.iter().position(|s| s.name == name)
    }

    /// The system pairs `(A, B)` judged: every system against the baseline (A = the other
    /// system), or all pairs in file order.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let k = self.systems.len();
        match self.baseline.as_deref().and_then(|b| self.system(b)) {
            Some(b) => (0..k).filter(|&i| i != b).map(|i| (i, b)).collect(),
            None => (0..k)
                .flat_map(|i| (i + 1..k).map(move |j| (i, j)))
                .collect(),
        }
    }

    /// Every field a study needs, with a message naming the field and the fix.
    pub fn check(&self) -> Result<()> {
        ensure!(
            self.format == FORMAT,
            "`format` is {}; this flowlens reads study format {FORMAT}",
            self.format
        );
        ensure!(
            !self.name.trim().is_empty()
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "`name` `{}` must be non-empty ASCII letters, digits, '-' or '_'",
            self.name
        );
        ensure!(
            self.systems.len() >= 2,
            "`systems`: a study compares at least two systems, found {}",
            self.systems.len()
        );
        for (i, s) in self.systems.iter().enumerate() {
            ensure!(
                s.run.is_some() != s.images.is_some(),
                "`systems[{i}]` ({}): give exactly one of `run` and `images`",
                s.name
            );
            ensure!(
                !s.name.is_empty() && self.system(&s.name) == Some(i),
                "`systems[{i}]`: the name `{}` is empty or used twice",
                s.name
            );
            ensure!(
                ["ema", "ema2", "model"].contains(&s.weights.as_str()),
                "`systems[{i}].weights` is `{}`: use ema, ema2 or model",
                s.weights
            );
        }
        if let Some(b) = &self.baseline {
            ensure!(
                self.system(b).is_some(),
                "`baseline` `{b}` is not one of the systems ({})",
                self.systems
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        ensure!(
            self.prompts.seeds_per_prompt >= 1,
            "`prompts.seeds_per_prompt` must be at least 1"
        );
        ensure!(
            ["first", "random", "stratified"].contains(&self.prompts.select.as_str()),
            "`prompts.select` is `{}`: use first, random or stratified",
            self.prompts.select
        );
        ensure!(
            self.sampler.steps >= 1,
            "`sampler.steps` must be at least 1"
        );
        ensure!(self.raters.count >= 1, "`raters.count` must be at least 1");
        let r = &self.protocol.responses;
        let allowed = ["left", "right", "tie", "both_bad"];
        ensure!(
            r.len() >= 2
                && r[0] == "left"
                && r[1] == "right"
                && r.iter().all(|x| allowed.contains(&x.as_str())),
            "`protocol.responses` {r:?}: start with \"left\", \"right\", then optionally \"tie\" and \"both_bad\""
        );
        for (name, share) in [
            ("gold_share", self.protocol.gold_share),
            ("repeat_share", self.protocol.repeat_share),
        ] {
            ensure!(
                (0.0..=0.5).contains(&share),
                "`protocol.{name}` is {share}: use a share in [0, 0.5]"
            );
        }
        ensure!(
            !self.criteria.is_empty(),
            "`criteria`: at least one criterion"
        );
        for (i, c) in self.criteria.iter().enumerate() {
            ensure!(
                !c.id.is_empty()
                    && c.id.chars().all(|x| x.is_ascii_alphanumeric() || x == '_')
                    && self.criteria.iter().filter(|d| d.id == c.id).count() == 1,
                "`criteria[{i}].id` `{}` must be unique ASCII letters, digits or '_'",
                c.id
            );
            ensure!(
                ["degraded", "mismatch", "none"].contains(&c.gold.as_str()),
                "`criteria[{i}].gold` is `{}`: use degraded, mismatch or none",
                c.gold
            );
        }
        let a = &self.analysis;
        for p in &a.primary {
            if !self.criteria.iter().any(|c| &c.id == p) {
                bail!("`analysis.primary` names `{p}`, which is not a criterion id");
            }
        }
        ensure!(
            0.0 < a.alpha && a.alpha < 0.5 && 0.5 < a.level && a.level < 1.0,
            "`analysis.alpha` ({}) must lie in (0, 0.5) and `analysis.level` ({}) in (0.5, 1)",
            a.alpha,
            a.level
        );
        ensure!(
            a.bootstrap_rounds >= 100 && a.sign_flip_rounds >= 100,
            "`analysis.bootstrap_rounds` and `sign_flip_rounds` must be at least 100"
        );
        ensure!(
            0.0 < a.expected_share && a.expected_share < 1.0 && a.expected_share != 0.5,
            "`analysis.expected_share` {} must lie in (0, 1) and differ from 0.5",
            a.expected_share
        );
        ensure!(
            (0.0..1.0).contains(&a.expected_icc),
            "`analysis.expected_icc` {} must lie in [0, 1)",
            a.expected_icc
        );
        Ok(())
    }
}

/// A prompt of the study: its id (`p<index:04>`), text and optional category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// Reads a prompts file: one prompt per line, or a TSV whose header has a `Prompt` column (and
/// optionally `Category`). Duplicates are refused with both line numbers.
pub fn read_prompts(path: &Path) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the prompts file {}", path.display()))?;
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    let first = lines.next().unwrap_or_default();
    let header: Vec<&str> = first.split('\t').collect();
    let tsv = header.len() > 1 && header.iter().any(|h| h.eq_ignore_ascii_case("prompt"));
    let mut rows: Vec<(usize, String, Option<String>)> = Vec::new();
    if tsv {
        let col = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
        let p = col("prompt").expect("checked");
        let c = col("category");
        for (i, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            let text = f.get(p).map(|s| s.trim().to_string()).unwrap_or_default();
            ensure!(
                !text.is_empty(),
                "{}: line {} has no `Prompt` field",
                path.display(),
                i + 2
            );
            rows.push((
                i + 2,
                text,
                c.and_then(|c| f.get(c)).map(|s| s.trim().to_string()),
            ));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if !line.trim().is_empty() {
                rows.push((i + 1, line.trim().to_string(), None));
            }
        }
    }
    ensure!(!rows.is_empty(), "{}: no prompts", path.display());
    for (k, (line, text, _)) in rows.iter().enumerate() {
        if let Some((other, _, _)) = rows[..k].iter().find(|r| &r.1 == text) {
            bail!(
                "{}: the prompt on line {line} repeats line {other} (`{text}`); a study's prompts must differ",
                path.display()
            );
        }
    }
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, (_, text, category))| Prompt {
            id: format!("p{i:04}"),
            text,
            category: category.filter(|c| !c.is_empty()),
        })
        .collect())
}

/// The prompts a study uses: all of them, or `spec.count` chosen as `spec.select` says (ids
/// and file order kept, so image folders keep their file names). `stratified` gives every
/// category its share of `count` (largest remainders), drawn at random within it.
pub fn select_prompts(all: Vec<Prompt>, spec: &PromptsSpec, seed: u64) -> Result<Vec<Prompt>> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    ensure!(
        spec.count <= all.len(),
        "`prompts.count` is {}, but the file has {} prompts",
        spec.count,
        all.len()
    );
    if spec.count == 0 || spec.count == all.len() {
        return Ok(all);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5E1E_C7ED);
    let mut chosen: Vec<usize> = match spec.select.as_str() {
        "first" => (0..spec.count).collect(),
        "random" => {
            let mut idx: Vec<usize> = (0..all.len()).collect();
            idx.shuffle(&mut rng);
            idx.truncate(spec.count);
            idx
        }
        _ => {
            let mut groups: std::collections::BTreeMap<Option<&str>, Vec<usize>> =
                Default::default();
            for (i, p) in all.iter().enumerate() {
                groups.entry(p.category.as_deref()).or_default().push(i);
            }
            let total = all.len() as f64;
            let quota: Vec<(f64, usize)> = groups
                .values()
                .map(|g| {
                    let exact = spec.count as f64 * g.len() as f64 / total;
                    (exact - exact.floor(), exact.floor() as usize)
                })
                .collect();
            let mut take: Vec<usize> = quota.iter().map(|q| q.1).collect();
            let mut order: Vec<usize> = (0..take.len()).collect();
            order.sort_by(|&a, &b| quota[b].0.total_cmp(&quota[a].0));
            let short = spec.count - take.iter().sum::<usize>();
            for &g in order.iter().take(short) {
                take[g] += 1;
            }
            groups
                .into_values()
                .zip(take)
                .flat_map(|(mut g, n)| {
                    g.shuffle(&mut rng);
                    g.truncate(n);
                    g
                })
                .collect()
        }
    };
    chosen.sort_unstable();
    Ok(chosen.into_iter().map(|i| all[i].clone()).collect())
}
