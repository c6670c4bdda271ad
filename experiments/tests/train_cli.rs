//! `flowlens train` through the binary: a run killed with SIGKILL at a random moment and resumed
//! continues with exactly the loss sequence of an uninterrupted run; non-finite losses and bad
//! configs are clear errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn flowlens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowlens"))
}

fn train_args(run: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--preset",
        "tiny",
        "--steps",
        "6",
        "--checkpoint-every",
        "2",
        "--quiet",
        "--run",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(run.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The last recorded loss of every step (a resumed run re-logs the steps after its checkpoint).
fn losses(run: &Path) -> BTreeMap<u64, String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.to_string())))
        .collect()
}

fn lines(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_run_killed_at_a_random_moment_resumes_with_the_same_losses() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let status = flowlens().args(train_args(&whole, &[])).status().unwrap();
    assert!(status.success());
    let expected = losses(&whole);
    assert_eq!(expected.len(), 6);

    // Kill after a random number of logged steps (1 to 4), possibly mid-checkpoint.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let kill_after = 1 + (nanos % 4) as usize;
    let killed = dir.path().join("killed");
    let mut child = flowlens()
        .args(train_args(&killed, &[]))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while lines(&killed) < kill_after && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20 + (nanos % 50) as u64));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let status = flowlens()
        .args(train_args(&killed, &["--resume"]))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(losses(&killed), expected, "killed after {kill_after} steps");
    // Nothing half-written is left behind.
    for entry in std::fs::read_dir(killed.join("checkpoints")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".partial"), "{name}");
    }
}

#[test]
fn a_non_finite_loss_stops_with_a_diagnosis_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("nan");
    let out = flowlens()
        .args([
            "train",
            "--preset",
            "tiny",
            "--steps",
            "4",
            "--checkpoint-every",
            "1",
            "--lr",
            "1e30",
            "--quiet",
            "--run",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not finite") && err.contains("nan_diagnosis.json"),
        "{err}"
    );
    assert!(run.join("nan_diagnosis.json").exists());
    assert!(
        run.join("checkpoints/step-00000001").is_dir(),
        "the last good checkpoint stays"
    );
}

#[test]
fn bad_configs_and_reused_run_folders_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    // An unknown field and an invalid value: each error names the field.
    for (text, field) in [("batch_sise = 3\n", "batch_sise"), ("steps = 0\n", "steps")] {
        std::fs::write(&cfg, text).unwrap();
        let out = flowlens()
            .args(["train", "--config"])
            .arg(&cfg)
            .arg("--run")
            .arg(dir.path().join("r"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(field), "{err}");
    }
    let out = flowlens()
        .args(train_args(&dir.path().join("none"), &["--resume"]))
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("holds no run"));
}

#[test]
fn sampling_writes_images_and_per_step_probes_independent_of_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let status = flowlens()
        .args([
            "train",
            "--preset",
            "tiny",
            "--variant",
            "both",
            "--steps",
            "2",
            "--checkpoint-every",
            "2",
            "--quiet",
            "--run",
        ])
        .arg(&run)
        .status()
        .unwrap();
    assert!(status.success());
    let prompts = dir.path().join("p.txt");
    std::fs::write(
        &prompts,
        "a small red circle above a large blue square\nyellow triangle\nblue square\n",
    )
    .unwrap();
    let sample = |batch: &str| {
        let out = flowlens()
            .args([
                "sample",
                "--steps",
                "3",
                "--seeds",
                "0,7",
                "--taps",
                "enc.*,llm.h04.image",
                "--batch-size",
                batch,
                "--run",
            ])
            .arg(&run)
            .arg("--prompts")
            .arg(&prompts)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let probe =
            flowlens_core::npy::NpyArray::read(run.join("probes/llm.h04.image/seed7_step02.npy"))
                .unwrap();
        assert_eq!(probe.shape, vec![3, 128]);
        probe.as_f32()
    };
    let whole = sample("3");
    let single = sample("1");
    let diff = whole
        .iter()
        .zip(&single)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "batch size changed the probes by {diff}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("probes/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["seeds"], serde_json::json!([0, 7]));
    assert_eq!(manifest["taps"]["enc.text"], 128);
    for i in 0..3 {
        let png = std::fs::read(run.join(format!("samples/seed0/{i:04}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
