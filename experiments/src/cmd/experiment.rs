//! The experiment commands: `flowlens ablation | exp1 | exp2 | grid | report | demo`, each
//! running protocol stages of an experiment file (assets/experiments/) and writing the report of
//! everything in its folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use flowlens_analysis::cka::Estimator;
use flowlens_core::device::{BackendTask, DeviceList, DeviceSpec};

use crate::io::parse_list;
use crate::pipeline::Log;
use crate::protocol::ExperimentFile;
use crate::report::write_report;
use crate::training::TrainDevices;

/// The experiment file of the demo and of `--quick`, embedded in the binary.
pub const DEMO_TOML: &str = include_str!("../../../assets/experiments/tiny.toml");
pub const QUICK_TOML: &str = include_str!("../../../assets/experiments/quick.toml");

/// Which stages a command runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stages {
    pub ablation: bool,
    pub exp1: bool,
    pub exp2: bool,
}

/// An experiment command.
#[derive(Debug, clap::Args)]
pub struct ExperimentCli {
    /// The experiment file (assets/experiments/*.toml); default: the demo's (tiny.toml, into
    /// runs/demo).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunOpts,
}

/// Where an experiment writes and what it runs on.
#[derive(Debug, clap::Args)]
pub struct RunOpts {
    /// Output folder (overrides the experiment file's `out`; the demo's default is runs/demo,
    /// or runs/demo-quick with --quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `cpu`, or `cuda:N` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Train data-parallel on these devices (`cuda:0,cuda:1,...`, or `cpu:0,cpu:1` for an
    /// equivalence check): overrides `--device` and the experiment file's `devices`; sampling
    /// and analysis run on the first.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<DeviceList>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// The devices of an experiment: `--devices`, else the file's `devices`, else `--device`.
fn devices_of(
    flag: Option<DeviceList>,
    device: DeviceSpec,
    file: &ExperimentFile,
) -> Result<DeviceList> {
    if let Some(d) = flag {
        return Ok(d);
    }
    match &file.devices {
        Some(text) => text
            .parse()
            .with_context(|| format!("the experiment file's `devices = \"{text}\"`")),
        None => Ok(DeviceList::single(device)),
    }
}

#[derive(Debug, clap::Args)]
pub struct GridCli {
    #[command(flatten)]
    pub experiment: ExperimentCli,
    /// The run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Read this existing feature store of the run (e.g. `probes` from `flowlens sample`)
    /// instead of sampling into `probes-grid`.
    #[arg(long)]
    pub store: Option<String>,
    /// The row taps: a tap, a comma-separated list or a pattern (`enc.noise,enc.text`,
    /// `enc.*`), one grid each, computed together (default: the file's `[grid] a`, `enc.noise`).
    #[arg(long)]
    pub a: Option<String>,
    /// The column taps, a pattern (default: the file's `[grid] b`, `llm.h*.image`).
    #[arg(long)]
    pub b: Option<String>,
    /// Sampling seeds to average (comma-separated; default: the file's).
    #[arg(long)]
    pub seeds: Option<String>,
    /// biased | debiased (default: the file's).
    #[arg(long)]
    pub estimator: Option<Estimator>,
}

#[derive(Debug, clap::Args)]
pub struct ReportCli {
    /// Experiment folders (each with ablation/, exp1/, exp2/ or grid/ results).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Output folder (default: the first folder's report/).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct DemoCli {
    /// The same pipeline at toy sizes (about a minute): for tests and a first look.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub run: RunOpts,
}

/// `flowlens ablation | exp1 | exp2`.
pub fn experiment(a: ExperimentCli, stages: Stages) -> Result<()> {
    let file = load(a.config.as_deref(), a.run.out)?;
    let devices = devices_of(a.run.devices, a.run.device, &file)?;
    run_stages(file, stages, None, devices, !a.run.quiet)?;
    Ok(())
}

/// `flowlens grid`.
pub fn grid(a: GridCli) -> Result<()> {
    // The run first: a wrong --run writes nothing (not even the experiment folder).
    flowlens_core::run::RunDir::open(&a.run)?;
    let mut file = load(a.experiment.config.as_deref(), a.experiment.run.out)?;
    if let Some(v) = a.a {
        file.grid.a = v;
    }
    if let Some(v) = a.b {
        file.grid.b = v;
    }
    if let Some(v) = a.estimator {
        file.grid.estimator = v;
    }
    if let Some(s) = &a.seeds {
        file.grid.probing.seeds = parse_list("--seeds", s)?;
    }
    file.check()?;
    let devices = devices_of(a.experiment.run.devices, a.experiment.run.device, &file)?;
    run_stages(
        file,
        Stages::default(),
        Some((a.run, a.store)),
        devices,
        !a.experiment.run.quiet,
    )?;
    Ok(())
}

/// `flowlens report`.
pub fn report(a: ReportCli) -> Result<()> {
    let out = a.out.unwrap_or_else(|| a.dirs[0].join("report"));
    let index = write_report(&a.dirs, &out)?;
    eprintln!("report: {}", index.display());
    Ok(())
}

/// `flowlens demo`.
pub fn run_demo(a: DemoCli) -> Result<()> {
    let devices = a
        .run
        .devices
        .unwrap_or_else(|| DeviceList::single(a.run.device));
    demo(a.quick, a.run.out, devices, !a.run.quiet)?;
    Ok(())
}

/// What a pipeline run does.
pub struct PipelineTask {
    pub file: ExperimentFile,
    pub stages: Stages,
    /// `flowlens grid`: the run and the optional existing store.
    pub grid: Option<(PathBuf, Option<String>)>,
    pub show: bool,
}

impl BackendTask for PipelineTask {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: B::Device) -> Result<()> {
        self.run_with(TrainDevices::<B>::one(device))
    }

    fn run_on<B: Backend>(self, devices: Vec<B::Device>, labels: Vec<String>) -> Result<()> {
        self.run_with(TrainDevices::<B>::of(devices, labels, 0))
    }
}

impl PipelineTask {
    /// The stages, training on every device of `devices` (data-parallel when several) and
    /// sampling and analysing on the first.
    fn run_with<B: Backend>(self, devices: TrainDevices<B>) -> Result<()> {
        let device = devices.first.clone();
        let log = Log::new(self.show);
        let f = &self.file;
        if self.stages.ablation {
            let r = crate::ablation::run::run::<B>(f, &devices, &log)?;
            for v in &r.variants {
                let finals: Vec<String> = r
                    .runs
                    .iter()
                    .filter(|x| &x.variant == v)
                    .filter_map(|x| x.final_eval().map(|e| format!("{:.3}", e.adherence)))
                    .collect();
                log.say(format!(
                    "ablation {v}: final adherence {}",
                    if finals.is_empty() {
                        "not evaluated".to_string()
                    } else {
                        finals.join(", ")
                    }
                ));
            }
        }
        if self.stages.exp1 {
            let r = crate::exp1::run::run::<B>(f, &device, &log)?;
            for c in &r.cells {
                let i = &c.inference.debiased.delta;
                log.say(format!(
                    "exp1 {} stream, layer {}, t = {:.2}: delta CKA (debiased) {}{}",
                    c.stream,
                    c.layer,
                    c.t,
                    crate::report::blocks::with_ci(i, true),
                    if c.by_construction {
                        ", 0 by construction".to_string()
                    } else {
                        i.null
                            .map(|n| format!(", {}", n.verdict()))
                            .unwrap_or_default()
                    }
                ));
            }
        }
        if self.stages.exp2 {
            let r = crate::exp2::run::run::<B>(f, &devices, &log)?;
            for c in &r.conditions {
                let s = &c.summary.debiased;
                log.say(format!(
                    "exp2 {}: AUC {:.3} ± {:.3} (SE), time to CKA >= {}: {}",
                    c.name,
                    s.auc.mean,
                    s.auc.se,
                    r.threshold,
                    s.crossing.reached.map_or("not reached".into(), |x| format!(
                        "{:.3} ± {:.3}",
                        x.mean, x.se
                    ))
                ));
            }
        }
        if let Some((run, store)) = &self.grid {
            for (path, _) in crate::grid::run::run::<B>(f, run, store.as_deref(), &device, &log)? {
                log.say(format!("grid written to {}", path.display()));
            }
        }
        Ok(())
    }
}

/// Loads the experiment file (or the embedded demo file) and applies `--out`.
pub fn load(config: Option<&Path>, out: Option<PathBuf>) -> Result<ExperimentFile> {
    let mut file = match config {
        Some(path) => ExperimentFile::load(path)?,
        None => ExperimentFile::parse(DEMO_TOML).context("the embedded demo experiment file")?,
    };
    if let Some(out) = out {
        file.out = out;
    }
    file.check()?;
    Ok(file)
}

/// Saves the resolved experiment file into its output folder (what produced the results).
fn save_resolved(file: &ExperimentFile) -> Result<()> {
    std::fs::create_dir_all(&file.out)
        .with_context(|| format!("cannot create {}", file.out.display()))?;
    let text = toml::to_string_pretty(file)?;
    flowlens_core::fsutil::write_atomic(&file.out.join("experiment.toml"), text.as_bytes())
        .with_context(|| format!("cannot write into {}", file.out.display()))
}

/// Runs stages of an experiment file, then writes the report of everything in its folder.
pub fn run_stages(
    file: ExperimentFile,
    stages: Stages,
    grid: Option<(PathBuf, Option<String>)>,
    devices: DeviceList,
    show: bool,
) -> Result<PathBuf> {
    save_resolved(&file)?;
    let out = file.out.clone();
    devices.run(PipelineTask {
        file,
        stages,
        grid,
        show,
    })??;
    let index = write_report(std::slice::from_ref(&out), &out.join("report"))?;
    if show {
        eprintln!("report: {}", index.display());
    }
    Ok(index)
}

/// `flowlens demo`.
pub fn demo(quick: bool, out: Option<PathBuf>, devices: DeviceList, show: bool) -> Result<PathBuf> {
    let started = Instant::now();
    let text = if quick { QUICK_TOML } else { DEMO_TOML };
    let mut file = ExperimentFile::parse(text).context("the embedded demo experiment file")?;
    if let Some(out) = out {
        file.out = out;
    }
    file.check()?;
    if show {
        eprintln!(
            "flowlens demo{}: the paper's pipeline at the tiny preset on synthetic shapes, into {} \
             (interrupt at any time; rerunning reuses what is finished)",
            if quick { " --quick" } else { "" },
            file.out.display()
        );
    }
    let both = file.resolve_run("both", None);
    let baseline = file.resolve_run("baseline", None);
    let out = file.out.clone();
    let first = devices.first();
    run_stages(
        file,
        Stages {
            ablation: true,
            exp1: true,
            exp2: true,
        },
        Some((both.clone(), None)),
        devices,
        show,
    )?;
    // The human preference study (simulated raters), then the report again with its section.
    let study = crate::study::demo::demo_study(
        &out,
        [("both", both), ("baseline", baseline)],
        first,
        show,
    )?;
    let index = write_report(std::slice::from_ref(&out), &out.join("report"))?;
    if show {
        eprintln!("study report: {}", study.display());
    }
    if show {
        let s = started.elapsed().as_secs();
        eprintln!(
            "demo finished in {}:{:02}; open {} (or index.html beside it)",
            s / 60,
            s % 60,
            index.display()
        );
    }
    Ok(index)
}
