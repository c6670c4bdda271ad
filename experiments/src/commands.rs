//! `flowlens ablation | exp1 | exp2 | grid | report | demo`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use flowlens_core::device::{BackendTask, DeviceSpec};

use crate::pipeline::{self, Log, Stages};
use crate::protocol::ExperimentFile;
use crate::report::write_report;

/// The experiment file of the demo and of `--quick`, embedded in the binary.
pub const DEMO_TOML: &str = include_str!("../../assets/experiments/tiny.toml");
pub const QUICK_TOML: &str = include_str!("../../assets/experiments/quick.toml");

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
        let log = Log::new(self.show);
        let f = &self.file;
        if self.stages.ablation {
            let r = pipeline::run_ablation::<B>(f, &device, &log)?;
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
            let r = pipeline::run_exp1::<B>(f, &device, &log)?;
            for c in &r.cells {
                log.say(format!(
                    "exp1 {} stream, layer {}, t = {:.2}: delta CKA {:+.3} ± {:.3} (debiased), {:+.3} ± {:.3} (biased)",
                    c.stream,
                    c.layer,
                    c.t,
                    c.delta_debiased.mean,
                    c.delta_debiased.sd,
                    c.delta_biased.mean,
                    c.delta_biased.sd
                ));
            }
        }
        if self.stages.exp2 {
            let r = pipeline::run_exp2::<B>(f, &device, &log)?;
            for c in &r.conditions {
                let s = &c.summary_debiased;
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
            let (path, _) = pipeline::run_grid::<B>(f, run, store.as_deref(), &device, &log)?;
            log.say(format!("grid written to {}", path.display()));
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
    device: DeviceSpec,
    show: bool,
) -> Result<PathBuf> {
    save_resolved(&file)?;
    let out = file.out.clone();
    device.run(PipelineTask {
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
pub fn demo(quick: bool, out: Option<PathBuf>, device: DeviceSpec, show: bool) -> Result<PathBuf> {
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
    let index = run_stages(
        file,
        Stages {
            ablation: true,
            exp1: true,
            exp2: true,
        },
        Some((both, None)),
        device,
        show,
    )?;
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
