//! `flowlens study …`: human preference studies from design to figure (docs/STUDY_FORMAT.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use flowlens_core::device::DeviceSpec;

use crate::study::design::{StudyToml, SystemSpec};
use crate::study::files::StudyDir;
use crate::study::generate::{self, Secret};
use crate::study::simulate::SimulationSpec;
use crate::study::{analyze, lock, monitor, outputs, page, plan, ratings, simulate};

#[derive(Debug, clap::Subcommand)]
pub enum StudyCmd {
    /// Create a study: study.toml, every system's images of every prompt and seed (the same
    /// initial noise for every run), opaque ids, the blind manifest with every rater's
    /// assignment, and the key.
    New(NewArgs),
    /// Whether the design can resolve the share it means to detect (closed form and simulated
    /// power of the primary test).
    Plan(PlanArgs),
    /// Freeze study.toml (design and pre-registered analysis) before collecting ratings.
    Lock(DirArg),
    /// Write the self-contained rating page (images inline, no network access) for remote
    /// raters.
    ExportHtml(ExportArgs),
    /// Ratings files with known ground truth, written as the page writes them.
    Simulate(SimulateArgs),
    /// Validate ratings files against the study and store them (idempotent).
    Import(ImportArgs),
    /// What is known without the key: progress, coverage, gold accuracy, side and time.
    Status(DirArg),
    /// Open the key for analysis (recorded in the audit log).
    Unblind(DirArg),
    /// Every statistic, the figure, tables and the methods paragraph into <study>/analysis/.
    Analyze(AnalyzeArgs),
}

#[derive(Debug, clap::Args)]
pub struct DirArg {
    /// The study directory.
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The study directory to create (must not exist or be empty).
    pub dir: PathBuf,
    /// Systems: `NAME=RUN[@STEP|@latest|@best]` (a run directory; EMA weights) or
    /// `NAME=images:DIR` (a folder of p<index:04>_<seed>.png from any model). With two systems
    /// the second is the baseline.
    #[arg(long, num_args = 2.., required_unless_present = "from")]
    pub systems: Vec<String>,
    /// One prompt per line, or a TSV with a `Prompt` (and `Category`) column.
    #[arg(long, required_unless_present = "from")]
    pub prompts: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seeds_per_prompt: usize,
    /// Use this many prompts of the file (default: all).
    #[arg(long)]
    pub n_prompts: Option<usize>,
    /// How --n-prompts are chosen: first, random or stratified (by the file's Category column).
    #[arg(long, default_value = "first")]
    pub select: String,
    #[arg(long, default_value_t = 12)]
    pub raters: usize,
    /// Ratings per pair in a balanced incomplete design (default: fully crossed).
    #[arg(long)]
    pub ratings_per_pair: Option<usize>,
    /// The baseline system (reference design); `none`: every pair (round robin).
    #[arg(long)]
    pub baseline: Option<String>,
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    #[arg(long, default_value_t = 2.0)]
    pub cfg: f32,
    /// The design's seed (order, sides, gold, repeats, rater codes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Add "both bad" to the responses.
    #[arg(long)]
    pub both_bad: bool,
    /// Two-alternative forced choice (no tie button).
    #[arg(long, conflicts_with = "both_bad")]
    pub no_tie: bool,
    /// Use this study.toml instead of the flags above (edit a generated one and start again).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Derive the id secret from the seed (byte-identical studies; whoever holds study.toml
    /// and the images can recompute the ids). Default: a random secret.
    #[arg(long)]
    pub reproducible: bool,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    pub dir: PathBuf,
    /// Rater logit SD in the simulation.
    #[arg(long, default_value_t = 0.3)]
    pub sd_rater: f64,
    /// Simulated studies.
    #[arg(long, default_value_t = 400)]
    pub studies: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    pub dir: PathBuf,
    /// The page to write (a folder with --per-rater).
    #[arg(long)]
    pub out: PathBuf,
    /// One page per rater (`rater-<code>.html`) instead of one page asking for the code.
    #[arg(long)]
    pub per_rater: bool,
    /// `png` (the study's images as they are) or `jpeg` (smaller pages).
    #[arg(long, default_value = "png")]
    pub image_format: String,
    /// JPEG quality with --image-format jpeg.
    #[arg(long, default_value_t = 92)]
    pub quality: u8,
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    pub dir: PathBuf,
    /// `CRITERION=P`: share of the pair's first system among decisive votes (repeatable).
    #[arg(long = "share", value_name = "CRITERION=P")]
    pub shares: Vec<String>,
    #[arg(long, default_value_t = 0.8)]
    pub sd_prompt: f64,
    #[arg(long, default_value_t = 0.3)]
    pub sd_rater: f64,
    #[arg(long, default_value_t = 0.0)]
    pub left_bias: f64,
    #[arg(long, default_value_t = 0.1)]
    pub tie: f64,
    #[arg(long, default_value_t = 0)]
    pub bad_raters: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the files go (default <study>/simulated).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    pub dir: PathBuf,
    /// Ratings files (`*.flowlens-ratings.json`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct AnalyzeArgs {
    pub dir: PathBuf,
    /// `stacked` (Figure 4 with the clustered intervals) or `grouped` (also the paper's
    /// grouped bars, figure_preference_grouped).
    #[arg(long, default_value = "stacked")]
    pub style: String,
    /// Print summary.json on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_system(arg: &str) -> Result<SystemSpec> {
    let (name, source) = arg
        .split_once('=')
        .with_context(|| format!("--systems `{arg}`: write NAME=RUN[@STEP] or NAME=images:DIR"))?;
    if let Some(dir) = source.strip_prefix("images:") {
        return Ok(SystemSpec {
            name: name.into(),
            run: None,
            checkpoint: "latest".into(),
            weights: "ema".into(),
            images: Some(dir.into()),
        });
    }
    let (run, checkpoint) = match source.rsplit_once('@') {
        Some((run, step)) => (run, step),
        None => (source, "latest"),
    };
    Ok(SystemSpec {
        name: name.into(),
        run: Some(run.into()),
        checkpoint: checkpoint.into(),
        weights: "ema".into(),
        images: None,
    })
}

fn new(a: NewArgs) -> Result<()> {
    let (spec, base) = match &a.from {
        Some(path) => (
            StudyToml::read(path)?,
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
        ),
        None => {
            let systems = a
                .systems
                .iter()
                .map(|s| parse_system(s))
                .collect::<Result<Vec<_>>>()?;
            let prompts = a.prompts.as_ref().context("--prompts FILE is required")?;
            let prompts_abs = std::path::absolute(prompts)?;
            let name = a
                .dir
                .file_name()
                .map(|n| {
                    n.to_string_lossy().replace(
                        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
                        "-",
                    )
                })
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "study".into());
            let mut spec =
                StudyToml::new(&name, systems, &prompts_abs.display().to_string(), a.raters);
            for s in &mut spec.systems {
                for p in [&mut s.run, &mut s.images].into_iter().flatten() {
                    *p = std::path::absolute(&*p)?.display().to_string();
                }
            }
            spec.prompts.seeds_per_prompt = a.seeds_per_prompt;
            spec.prompts.count = a.n_prompts.unwrap_or(0);
            spec.prompts.select = a.select.clone();
            spec.raters.ratings_per_pair = a.ratings_per_pair.unwrap_or(0);
            spec.sampler.steps = a.steps;
            spec.sampler.cfg = a.cfg;
            spec.seed = a.seed;
            match a.baseline.as_deref() {
                Some("none") => spec.baseline = None,
                Some(b) => spec.baseline = Some(b.into()),
                None => {}
            }
            if a.both_bad {
                spec.protocol.responses.push("both_bad".into());
            }
            if a.no_tie {
                spec.protocol.responses.retain(|r| r != "tie");
            }
            (spec, std::env::current_dir()?)
        }
    };
    let secret = if a.reproducible {
        Secret::FromSeed
    } else {
        Secret::Random
    };
    let m = generate::create(&a.dir, &spec, &base, a.device, secret, !a.quiet)?;
    let screens: usize =
        m.raters.iter().map(|r| r.tasks.len()).sum::<usize>() / m.raters.len().max(1);
    println!(
        "study {}: {} systems, {} prompts x {} seed(s), {} items, {} gold items, {} raters (~{screens} screens each), {} images",
        a.dir.display(),
        m.systems.len(),
        m.prompts.len(),
        m.seeds.len(),
        m.items.len(),
        m.gold.len(),
        m.raters.len(),
        m.images.len()
    );
    println!(
        "rater codes: {}",
        m.raters
            .iter()
            .map(|r| r.code.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "next: edit [analysis] in {} if needed, then `flowlens study plan {0}` and `flowlens study lock {0}`",
        a.dir.display()
    );
    Ok(())
}

fn parse_shares(args: &[String]) -> Result<BTreeMap<String, f64>> {
    args.iter()
        .flat_map(|a| a.split(','))
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (c, p) = s.split_once('=').with_context(|| {
                format!("--share `{s}`: write CRITERION=P, e.g. prompt_following=0.7")
            })?;
            let p: f64 = p
                .parse()
                .with_context(|| format!("--share `{s}`: `{p}` is not a number"))?;
            Ok((c.to_string(), p))
        })
        .collect()
}

/// `flowlens study …`.
pub fn run(cmd: StudyCmd) -> Result<()> {
    match cmd {
        StudyCmd::New(a) => new(a),
        StudyCmd::Plan(a) => {
            let study = StudyDir::open(&a.dir)?;
            let spec = StudyToml::read(&study.toml())?;
            let prompts = study.read_manifest()?.prompts.len();
            ensure!(a.studies >= 10, "--studies must be at least 10");
            let r = plan::plan(&spec, prompts, a.sd_rater, a.studies)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.text);
            }
            Ok(())
        }
        StudyCmd::Lock(a) => {
            let l = lock::lock(&a.dir)?;
            println!(
                "locked {} at {} (study.toml sha256 {})",
                a.dir.display(),
                l.locked,
                &l.toml_sha256[..16]
            );
            Ok(())
        }
        StudyCmd::ExportHtml(a) => {
            let format = page::PageImages::parse(&a.image_format, a.quality)?;
            for f in page::export(&a.dir, &a.out, a.per_rater, format)? {
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                println!(
                    "{} ({:.1} MiB)",
                    f.display(),
                    size as f64 / (1 << 20) as f64
                );
            }
            Ok(())
        }
        StudyCmd::Simulate(a) => {
            let share = parse_shares(&a.shares)?;
            let out = a.out.clone().unwrap_or_else(|| a.dir.join("simulated"));
            let t = simulate::simulate(
                &a.dir,
                &SimulationSpec {
                    share,
                    sd_prompt: a.sd_prompt,
                    sd_rater: a.sd_rater,
                    left_bias: a.left_bias,
                    tie: a.tie,
                    bad_raters: a.bad_raters,
                    seed: a.seed,
                },
                &out,
            )?;
            println!(
                "{} ratings files in {} (ground truth in truth.json); import them with `flowlens study import {} {}/*.flowlens-ratings.json`",
                t.files.len(),
                out.display(),
                a.dir.display(),
                out.display()
            );
            Ok(())
        }
        StudyCmd::Import(a) => {
            for r in ratings::import(&a.dir, &a.files)? {
                println!(
                    "{}: rater {}, {} judgments{}{}",
                    r.file.display(),
                    r.rater,
                    r.judgments,
                    if r.complete {
                        ", complete"
                    } else {
                        ", partial"
                    },
                    if r.duplicate {
                        " (already imported: unchanged)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        StudyCmd::Status(a) => {
            print!("{}", monitor::monitor(&a.dir)?.text);
            Ok(())
        }
        StudyCmd::Unblind(a) => {
            let u = lock::unblind(&a.dir)?;
            println!(
                "unblinded at {} by {} (recorded in audit.log)",
                u.time, u.who
            );
            Ok(())
        }
        StudyCmd::Analyze(a) => {
            let study = StudyDir::open(&a.dir)?;
            ensure!(
                a.style == "stacked" || a.style == "grouped",
                "--style `{}`: use stacked or grouped",
                a.style
            );
            let s = analyze::analyze(&a.dir)?;
            let spec = StudyToml::read(&study.toml())?;
            let manifest = study.read_manifest()?;
            let mut files = outputs::write_all(&study.analysis(), &s, &spec, &manifest)?;
            if a.style == "grouped" {
                let (png, svg) = outputs::grouped_figure(&study.analysis(), &s)?;
                files.extend([png, svg]);
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                for p in &s.pairs {
                    println!(
                        "{:<18} {} vs {}: {}/{}/{} (A/B/tie), win rate {} cluster CI {} sign-flip p {} | naive p {} (assumes independent votes)",
                        p.criterion,
                        p.a,
                        p.b,
                        p.tally.a,
                        p.tally.b,
                        p.tally.ties,
                        p.win_rate.map_or("-".into(), |x| format!("{x:.3}")),
                        p.cluster_ci
                            .map_or("-".into(), |i| format!("[{:.3}, {:.3}]", i.lower, i.upper)),
                        p.holm_p
                            .or(p.sign_flip_p)
                            .map_or("-".into(), |x| format!("{x:.4}")),
                        p.naive_p.map_or("-".into(), |x| format!("{x:.4}")),
                    );
                }
                for w in &s.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{} files in {}", files.len(), study.analysis().display());
            }
            Ok(())
        }
    }
}
