//! `flowlens study simulate`: ratings files from known ground truth, written through the
//! page's own schema (STUDY.md 5.8). Per criterion, system A of each pair is chosen among
//! decisive votes with logit P = logit(share) + u_prompt + v_rater (u ~ N(0, sd_prompt²),
//! v ~ N(0, sd_rater²)); ties with a fixed probability; a left bias moves decisive votes to the
//! left image; bad raters answer at random and fast; good raters get gold items right 95 % of
//! the time. Reads the key (recorded in the audit log): for tests, demos and power checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use flowlens_analysis::pref::cluster::standard_normal;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::design::StudyToml;
use super::files::{Key, Manifest, StudyDir, read_json, write_json, write_whole};
use super::page::{Judgment, RatingsPayload};

/// The simulated raters' behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimulationSpec {
    /// criterion -> share of system A (the pair's first system) among decisive votes.
    pub share: BTreeMap<String, f64>,
    pub sd_prompt: f64,
    pub sd_rater: f64,
    /// Probability that a decisive vote goes to the left image whatever it shows.
    pub left_bias: f64,
    /// Probability of a tie (when ties are offered).
    pub tie: f64,
    /// The first `bad_raters` raters answer at random in 300-700 ms.
    pub bad_raters: usize,
    pub seed: u64,
}

/// What a simulation wrote: per criterion and pair, the main judgments' tally (A, B, ties),
/// over every rater and over the good raters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub spec: SimulationSpec,
    /// `"<criterion>:<A>:<B>"` -> [A, B, ties]
    pub tallies: BTreeMap<String, [u64; 3]>,
    pub good_tallies: BTreeMap<String, [u64; 3]>,
    pub bad_raters: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// Writes one ratings file per rater into `out` and `out/truth.json`; returns the truth.
pub fn simulate(root: &Path, sim: &SimulationSpec, out: &Path) -> Result<Truth> {
    let study = StudyDir::open(root)?;
    let lock = study.require_lock("simulate")?;
    let spec: StudyToml = super::lock::check_locked(&study, &lock)?;
    let manifest: Manifest = study.read_manifest()?;
    let key: Key = read_json(&study.key())?;
    for (c, s) in &sim.share {
        ensure!(
            spec.criteria.iter().any(|x| &x.id == c),
            "--share names `{c}`, which is not a criterion of the study ({})",
            spec.criteria
                .iter()
                .map(|x| x.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        ensure!(
            (0.0..=1.0).contains(s),
            "--share {c}={s}: a share lies in [0, 1]"
        );
    }
    ensure!(
        (0.0..1.0).contains(&sim.left_bias) && (0.0..1.0).contains(&sim.tie),
        "--left-bias and --tie are probabilities in [0, 1)"
    );
    study.audit_line("simulate: read the key to draw ratings with known ground truth")?;
    let ties = spec.protocol.responses.iter().any(|r| r == "tie");
    let pairs = spec.pairs();
    let mut rng = ChaCha8Rng::seed_from_u64(sim.seed);
    let prompt_effect: BTreeMap<(String, String), f64> = spec
        .criteria
        .iter()
        .flat_map(|c| {
            manifest
                .prompts
                .iter()
                .map(move |p| (c.id.clone(), p.id.clone()))
        })
        .map(|k| (k, sim.sd_prompt * standard_normal(&mut rng)))
        .collect();
    let mut truth = Truth {
        spec: sim.clone(),
        tallies: BTreeMap::new(),
        good_tallies: BTreeMap::new(),
        bad_raters: Vec::new(),
        files: Vec::new(),
    };
    let system_of = |id: &str| key.images.get(id).map(|e| e.system.clone());
    for (ri, rater) in manifest.raters.iter().enumerate() {
        let bad = ri < sim.bad_raters;
        if bad {
            truth.bad_raters.push(rater.code.clone());
        }
        let v = sim.sd_rater * standard_normal(&mut rng);
        let mut clock: i64 = 1_780_000_000_000 + ri as i64 * 10_000_000;
        let mut judgments = Vec::new();
        for t in &rater.tasks {
            let (ls, rs) = (
                system_of(&t.left).context("an image of the manifest is not in the key")?,
                system_of(&t.right).context("an image of the manifest is not in the key")?,
            );
            let choice: &str = if bad {
                ["left", "right", "tie"][rng.random_range(0..if ties { 3 } else { 2 })]
            } else if t.kind == "gold" {
                let g = manifest
                    .gold_item(&t.item)
                    .context("a gold item of a task is missing")?;
                let right_answer = if g.answer == t.left { "left" } else { "right" };
                if rng.random_bool(0.95) {
                    right_answer
                } else if right_answer == "left" {
                    "right"
                } else {
                    "left"
                }
            } else if ties && rng.random_bool(sim.tie) {
                "tie"
            } else if rng.random_bool(sim.left_bias) {
                "left"
            } else {
                // Which of the pair's systems is A.
                let (ia, ib) = (
                    spec.system(&ls).context("key names an unknown system")?,
                    spec.system(&rs).context("key names an unknown system")?,
                );
                let a_left = pairs.contains(&(ia, ib));
                let share = sim.share.get(&t.criterion).copied().unwrap_or(0.5);
                let prompt = manifest
                    .prompt_of(&t.item)
                    .map(|p| p.id.clone())
                    .unwrap_or_default();
                let u = prompt_effect
                    .get(&(t.criterion.clone(), prompt))
                    .copied()
                    .unwrap_or(0.0);
                let logit = (share.clamp(1e-9, 1.0 - 1e-9) / (1.0 - share.clamp(1e-9, 1.0 - 1e-9)))
                    .ln()
                    + u
                    + v;
                let picks_a = rng.random_bool(1.0 / (1.0 + (-logit).exp()));
                if picks_a == a_left { "left" } else { "right" }
            };
            if t.kind == "main" {
                let (ia, ib) = (spec.system(&ls).unwrap_or(0), spec.system(&rs).unwrap_or(0));
                let (a, b, a_left) = if pairs.contains(&(ia, ib)) {
                    (ia, ib, true)
                } else {
                    (ib, ia, false)
                };
                let k = format!(
                    "{}:{}:{}",
                    t.criterion, spec.systems[a].name, spec.systems[b].name
                );
                let slot = match (choice, a_left) {
                    ("left", true) | ("right", false) => 0,
                    ("left", false) | ("right", true) => 1,
                    _ => 2,
                };
                truth.tallies.entry(k.clone()).or_insert([0; 3])[slot] += 1;
                if !bad {
                    truth.good_tallies.entry(k).or_insert([0; 3])[slot] += 1;
                }
            }
            let rt: i64 = if bad {
                rng.random_range(300..700)
            } else {
                rng.random_range(1500..6000)
            };
            let shown = clock + 400;
            clock = shown + rt;
            judgments.push(Judgment {
                seq: t.seq,
                item: t.item.clone(),
                kind: t.kind.clone(),
                left: t.left.clone(),
                right: t.right.clone(),
                criterion: t.criterion.clone(),
                choice: choice.into(),
                shown_at: shown,
                answered_at: clock,
                rt_ms: rt,
            });
        }
        let payload = RatingsPayload {
            study_id: manifest.study_id.clone(),
            manifest_sha256: lock.manifest_sha256.clone(),
            page_sha256: String::new(),
            rater: rater.code.clone(),
            client: "simulated".into(),
            user_agent: "flowlens study simulate".into(),
            viewport: [1280, 800],
            complete: true,
            judgments,
        };
        let path = out.join(format!(
            "{}-{}-simulated.flowlens-ratings.json",
            manifest.study_id, rater.code
        ));
        write_whole(&path, payload.to_file().as_bytes())?;
        truth.files.push(path);
    }
    write_json(&out.join("truth.json"), &truth)?;
    Ok(truth)
}
