//! Launching `flowlens` jobs as child processes that write run directories (ARCHITECTURE.md:
//! "two ways to run, one code path"): a crash in a run shows its error here and never takes the
//! app down. The child is this same executable with the `cli` argument (`flowlens-lab cli train
//! ...` runs exactly `flowlens train ...`), so the app needs no second binary on the PATH.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use flowlens_core::flow::{Preset, Variant};

/// What the launch form starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// One training run (`flowlens train`).
    Train,
    /// The Table-1 ablation over a set of variants and seeds (`flowlens ablation`).
    Ablation,
    /// Experiment 1 on an experiment folder (`flowlens exp1`).
    Exp1,
    /// Experiment 2 (`flowlens exp2`).
    Exp2,
    /// The whole demo, quick or full (`flowlens demo`).
    Demo,
}

impl JobKind {
    pub const ALL: [JobKind; 5] = [
        JobKind::Train,
        JobKind::Ablation,
        JobKind::Exp1,
        JobKind::Exp2,
        JobKind::Demo,
    ];

    pub fn label(self) -> &'static str {
        match self {
            JobKind::Train => "train one run",
            JobKind::Ablation => "ablation (Table 1)",
            JobKind::Exp1 => "experiment 1",
            JobKind::Exp2 => "experiment 2",
            JobKind::Demo => "demo",
        }
    }
}

/// The launch form.
#[derive(Debug, Clone)]
pub struct LaunchForm {
    pub kind: JobKind,
    /// Folder name under the runs root.
    pub name: String,
    pub preset: Preset,
    pub variant: Variant,
    /// Ablation variant set.
    pub variants: Vec<(Variant, bool)>,
    pub seeds: String,
    pub steps: usize,
    /// Stage 1 (LLM frozen) steps; the rest is stage 2.
    pub stage1_steps: usize,
    pub eval_every: usize,
    pub quick: bool,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Data-parallel training devices (`--devices`: `cuda:0,cuda:1`, `cpu:0,cpu:1`); empty = the
    /// one device above.
    pub devices: String,
    /// Training data (`--data`: `shapes`, `folder:DIR`, `parquet:PATH`, `webdataset:PATH`);
    /// empty = the preset's.
    pub data: String,
    /// The flow model's LLM (`--llm`: `prior`, `random` or a Hugging Face Llama folder); empty =
    /// the preset's.
    pub llm: String,
}

impl Default for LaunchForm {
    fn default() -> Self {
        Self {
            kind: JobKind::Train,
            name: "lab-run".into(),
            preset: Preset::Tiny,
            variant: Variant::Both,
            variants: [
                Variant::Baseline,
                Variant::DecoderOnly,
                Variant::EncoderOnly,
                Variant::Both,
                Variant::Uvit,
            ]
            .into_iter()
            .map(|v| (v, true))
            .collect(),
            seeds: "0".into(),
            steps: 600,
            stage1_steps: 300,
            eval_every: 200,
            quick: true,
            device: "cpu".into(),
            devices: String::new(),
            data: String::new(),
            llm: String::new(),
        }
    }
}

/// A variant as the launch form shows it (its command-line name).
pub fn variant_label(v: Variant) -> &'static str {
    v.name()
}

fn parse_seeds(text: &str) -> Result<Vec<u64>> {
    text.split(',')
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| anyhow::anyhow!("seeds: `{}` is not a seed (e.g. 0,1,2)", s.trim()))
        })
        .collect()
}

impl LaunchForm {
    /// The `flowlens` arguments for this form, writing the experiment or training file it needs
    /// under `root/.lab/`. Returns the arguments and the folder the job writes.
    pub fn command(&self, root: &Path) -> Result<(Vec<String>, PathBuf)> {
        let name = self.name.trim();
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            anyhow::bail!("name: `{name}` is not a folder name (letters, digits, - and _)");
        }
        let out = root.join(name);
        let lab = root.join(".lab");
        std::fs::create_dir_all(&lab).with_context(|| format!("creating {}", lab.display()))?;
        let seeds = parse_seeds(&self.seeds)?;
        let s = |x: &str| x.to_string();
        let mut args = match self.kind {
            JobKind::Train => {
                let seed = *seeds.first().context("seeds: give one seed")?;
                let file = lab.join(format!("{name}-train.toml"));
                std::fs::write(&file, format!("stage1_steps = {}\n", self.stage1_steps))
                    .with_context(|| format!("writing {}", file.display()))?;
                let mut a = vec![
                    s("train"),
                    s("--config"),
                    file.display().to_string(),
                    s("--preset"),
                    self.preset.name().to_string(),
                    s("--variant"),
                    s(variant_label(self.variant)),
                    s("--steps"),
                    self.steps.to_string(),
                    s("--seed"),
                    seed.to_string(),
                    s("--eval-every"),
                    self.eval_every.to_string(),
                    s("--run"),
                    out.display().to_string(),
                ];
                for (flag, value) in [("--data", &self.data), ("--llm", &self.llm)] {
                    if !value.trim().is_empty() {
                        a.push(s(flag));
                        a.push(value.trim().to_string());
                    }
                }
                if out.join("manifest.json").is_file() {
                    a.push(s("--resume"));
                }
                a
            }
            JobKind::Ablation => {
                let variants: Vec<String> = self
                    .variants
                    .iter()
                    .filter(|(_, on)| *on)
                    .map(|(v, _)| format!("\"{}\"", variant_label(*v)))
                    .collect();
                if variants.is_empty() {
                    anyhow::bail!("variants: choose at least one");
                }
                let file = lab.join(format!("{name}.toml"));
                let text = format!(
                    "out = \"{}\"\n\n[ablation]\npreset = \"{}\"\nvariants = [{}]\nseeds = [{}]\nsteps = {}\neval_every = {}\n\n[ablation.train]\nstage1_steps = {}\n",
                    out.display(),
                    self.preset,
                    variants.join(", "),
                    seeds
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.steps,
                    self.eval_every,
                    self.stage1_steps,
                );
                std::fs::write(&file, text)
                    .with_context(|| format!("writing {}", file.display()))?;
                vec![s("ablation"), s("--config"), file.display().to_string()]
            }
            JobKind::Exp1 | JobKind::Exp2 => {
                let cmd = if self.kind == JobKind::Exp1 {
                    "exp1"
                } else {
                    "exp2"
                };
                let file = out.join("experiment.toml");
                if !file.is_file() {
                    anyhow::bail!(
                        "{} does not exist: run the ablation into `{name}` first (experiments 1 and 2 use its runs)",
                        file.display()
                    );
                }
                vec![s(cmd), s("--config"), file.display().to_string()]
            }
            JobKind::Demo => {
                let mut a = vec![s("demo")];
                if self.quick {
                    a.push(s("--quick"));
                }
                a
            }
        };
        if self.kind != JobKind::Train {
            args.push(s("--out"));
            args.push(out.display().to_string());
        }
        let devices = self.devices.trim();
        if devices.is_empty() || self.kind == JobKind::Exp1 {
            args.push(s("--device"));
            args.push(self.device.clone());
        } else {
            // Checked here, so that a typo is shown in the form instead of a failed job.
            let list: flowlens_core::device::DeviceList = devices
                .parse()
                .map_err(|e| anyhow::anyhow!("devices: {e}"))?;
            args.push(s("--devices"));
            args.push(list.to_string());
        }
        Ok((args, out))
    }
}

/// A launched child.
pub struct ChildJob {
    pub label: String,
    pub args: Vec<String>,
    /// The folder it writes.
    pub out: PathBuf,
    pub log: PathBuf,
    pub started: Instant,
    child: Option<Child>,
    pub exit: Option<ExitStatus>,
    pub stopped_by_user: bool,
    /// The end of its output once it has exited.
    pub log_tail: String,
}

impl ChildJob {
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    pub fn failed(&self) -> bool {
        self.exit.is_some_and(|e| !e.success()) && !self.stopped_by_user
    }

    pub fn status(&self) -> String {
        match (&self.child, self.exit) {
            (Some(_), _) => format!("running for {:.0} s", self.started.elapsed().as_secs_f64()),
            (None, _) if self.stopped_by_user => "stopped (resume continues it)".into(),
            (None, Some(e)) if e.success() => "finished".into(),
            (None, Some(e)) => format!("failed ({e})"),
            (None, None) => "not started".into(),
        }
    }
}

/// The program that runs `flowlens` commands: this executable with `cli`, or the one named by
/// `FLOWLENS_LAB_CLI` (a `flowlens` binary).
pub fn cli_program() -> Result<(PathBuf, Vec<String>)> {
    if let Some(p) = std::env::var_os("FLOWLENS_LAB_CLI") {
        return Ok((PathBuf::from(p), Vec::new()));
    }
    let exe = std::env::current_exe().context("finding this executable to launch jobs with")?;
    Ok((exe, vec!["cli".into()]))
}

/// The children this app started.
pub struct Launcher {
    pub program: (PathBuf, Vec<String>),
    /// Extra environment for every child (e.g. `FLOWLENS_CACHE`).
    pub env: Vec<(String, String)>,
    pub jobs: Vec<ChildJob>,
}

impl Launcher {
    pub fn new(program: (PathBuf, Vec<String>)) -> Self {
        Self {
            program,
            env: Vec::new(),
            jobs: Vec::new(),
        }
    }

    /// Starts `args`, its output going to `root/.lab/logs/`.
    pub fn spawn(
        &mut self,
        root: &Path,
        label: String,
        args: Vec<String>,
        out: PathBuf,
    ) -> Result<()> {
        let logs = root.join(".lab").join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let log = logs.join(format!(
            "{stamp}-{}.log",
            args.first().map_or("job", String::as_str)
        ));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = file.try_clone().context("duplicating the log handle")?;
        let child = Command::new(&self.program.0)
            .args(&self.program.1)
            .args(&args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", self.program.0.display()))?;
        self.jobs.push(ChildJob {
            label,
            args,
            out,
            log,
            started: Instant::now(),
            child: Some(child),
            exit: None,
            stopped_by_user: false,
            log_tail: String::new(),
        });
        Ok(())
    }

    /// Reaps children that exited (non-blocking); returns the labels of those that failed.
    pub fn poll(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for job in &mut self.jobs {
            let Some(child) = job.child.as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                job.exit = Some(status);
                job.child = None;
                job.log_tail = read_tail(&job.log, 4000);
                if job.failed() {
                    failed.push(job.label.clone());
                }
            }
        }
        failed
    }

    /// Kills a running child. Training is crash-safe (atomic checkpoints, bit-exact resume), so
    /// a kill loses at most the steps since the last checkpoint.
    pub fn stop(&mut self, index: usize) {
        if let Some(job) = self.jobs.get_mut(index)
            && let Some(child) = job.child.as_mut()
        {
            let _ = child.kill();
            job.stopped_by_user = true;
        }
    }

    /// Whether a child of this app is writing `dir` (or a run inside it).
    pub fn is_writing(&self, dir: &Path) -> bool {
        self.jobs
            .iter()
            .any(|j| j.running() && (dir.starts_with(&j.out) || j.out.starts_with(dir)))
    }

    pub fn running(&self) -> usize {
        self.jobs.iter().filter(|j| j.running()).count()
    }
}

/// The last `bytes` of a file, from a line start.
pub fn read_tail(path: &Path, bytes: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    // Progress bars redraw with carriage returns: keep the last state of each line.
    text.lines()
        .map(|l| l.rsplit('\r').next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ablation_form_writes_an_experiment_file_the_cli_accepts() {
        let root = tempfile::tempdir().unwrap();
        let form = LaunchForm {
            kind: JobKind::Ablation,
            name: "abl".into(),
            seeds: "0, 1".into(),
            ..Default::default()
        };
        let (args, out) = form.command(root.path()).unwrap();
        assert_eq!(args[0], "ablation");
        assert_eq!(out, root.path().join("abl"));
        let file =
            flowlens_experiments::cmd::experiment::load(Some(Path::new(&args[2])), None).unwrap();
        assert_eq!(file.ablation.seeds, vec![0, 1]);
        assert_eq!(file.ablation.variants.len(), 5);
        assert_eq!(file.ablation.steps, 600);
    }

    #[test]
    fn bad_form_fields_are_named() {
        let root = tempfile::tempdir().unwrap();
        let mut form = LaunchForm {
            seeds: "0,x".into(),
            ..Default::default()
        };
        let e = form.command(root.path()).unwrap_err().to_string();
        assert!(e.contains("seeds") && e.contains("`x`"), "{e}");
        form.seeds = "0".into();
        form.name = "../up".into();
        assert!(
            form.command(root.path())
                .unwrap_err()
                .to_string()
                .contains("name")
        );
        form.name = "x".into();
        form.kind = JobKind::Exp1;
        assert!(
            form.command(root.path())
                .unwrap_err()
                .to_string()
                .contains("ablation")
        );
    }

    #[test]
    fn the_train_form_passes_data_and_llm_and_resumes_an_existing_run() {
        let root = tempfile::tempdir().unwrap();
        let mut form = LaunchForm {
            name: "r".into(),
            data: "folder:/data/imgs".into(),
            llm: " random ".into(),
            ..Default::default()
        };
        let (args, _) = form.command(root.path()).unwrap();
        let joined = args.join(" ");
        assert!(
            joined.contains("--data folder:/data/imgs --llm random"),
            "{joined}"
        );
        assert!(!joined.contains("--resume"));
        std::fs::create_dir_all(root.path().join("r")).unwrap();
        std::fs::write(root.path().join("r/manifest.json"), "{}").unwrap();
        form.data.clear();
        let (args, _) = form.command(root.path()).unwrap();
        assert!(args.contains(&"--resume".to_string()) && !args.contains(&"--data".to_string()));
        // Data-parallel devices replace the single device; a bad list is named.
        form.devices = "cpu:0, cpu:1".into();
        let (args, _) = form.command(root.path()).unwrap();
        let joined = args.join(" ");
        assert!(
            joined.ends_with("--devices cpu:0,cpu:1") && !joined.contains("--device "),
            "{joined}"
        );
        form.devices = "cpu:0,cuda:0".into();
        let e = form.command(root.path()).unwrap_err().to_string();
        assert!(e.starts_with("devices:"), "{e}");
    }
}
