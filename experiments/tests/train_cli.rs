//! `flowlens train` through the binary: a run killed with SIGKILL at a random moment and resumed
//! continues with exactly the loss sequence of an uninterrupted run; non-finite losses and bad
//! configs are clear errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowlens_core::store::{StoreName, StorePaths};

/// `flowlens` with its caches (latents, the LLM prior) in the run's parent folder.
fn flowlens_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowlens"));
    c.env("FLOWLENS_CACHE", dir.join("cache"));
    c
}

fn flowlens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowlens"))
}

/// A config that keeps the tests fast: a short stage-0 prior, little data, no sample grids.
const FAST: &str = "sample_every = 0\neval_every = 0\nbatch_size = 4\n[prior]\nsteps = 12\nbatch_size = 16\n[data]\nkind = \"shapes\"\nseed = 0\nlen = 96\n";

fn fast_config(dir: &Path) -> String {
    let path = dir.join("fast.toml");
    std::fs::write(&path, FAST).unwrap();
    path.display().to_string()
}

fn train_args(run: &Path, extra: &[&str]) -> Vec<String> {
    let parent = run.parent().unwrap();
    let mut args: Vec<String> = [
        "train",
        "--config",
        &fast_config(parent),
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

/// The store of `flowlens sample` in `run`.
fn probes(run: &Path) -> StorePaths {
    StorePaths::new(run, StoreName::sample())
}

#[test]
fn a_run_killed_at_a_random_moment_resumes_with_the_same_losses() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let status = flowlens_in(dir.path())
        .args(train_args(&whole, &[]))
        .status()
        .unwrap();
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
    let mut child = flowlens_in(dir.path())
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
    let status = flowlens_in(dir.path())
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
    let out = flowlens_in(dir.path())
        .args([
            "train",
            "--config",
            &fast_config(dir.path()),
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
    let status = flowlens_in(dir.path())
        .args([
            "train",
            "--config",
            &fast_config(dir.path()),
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
            flowlens_core::npy::NpyArray::read_slab(probes(&run).probe("llm.h04.image", 7), 2)
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
        serde_json::from_str(&std::fs::read_to_string(probes(&run).manifest()).unwrap()).unwrap();
    assert_eq!(manifest["seeds"], serde_json::json!([0, 7]));
    assert_eq!(manifest["taps"]["enc.text"], 128);
    for i in 0..3 {
        let png = std::fs::read(probes(&run).sample_png(0, i)).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}

fn read_metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn gradient_accumulation_matches_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let train = |name: &str, extra: &[&str]| {
        let run = dir.path().join(name);
        let args = train_args(&run, extra);
        let out = flowlens_in(dir.path()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        read_metrics(&run)
            .into_iter()
            .filter(|v| v.get("loss").is_some())
            .map(|v| {
                (
                    v["loss"].as_f64().unwrap(),
                    v["grad_norm"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let whole = train("whole", &["--batch-size", "4"]);
    let split = train("split", &["--batch-size", "2", "--grad-accum", "2"]);
    let other = train("other", &["--batch-size", "2"]);
    assert_eq!(whole.len(), 6);
    for ((lw, gw), (ls, gs)) in whole.iter().zip(&split) {
        assert!((lw - ls).abs() <= 1e-5 * lw.abs(), "loss {lw} vs {ls}");
        assert!((gw - gs).abs() <= 1e-4 * gw.abs(), "grad norm {gw} vs {gs}");
    }
    // Half the batch is a different step: the comparison can fail.
    assert!((whole[0].0 - other[0].0).abs() > 1e-4);
}

#[test]
fn hooks_best_checkpoint_second_ema_and_every_sampling_output() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cfg = dir.path().join("hooks.toml");
    std::fs::write(
        &cfg,
        format!(
            "ema_decay_2 = 0.999\neval_n = 4\neval_solver_steps = 2\nkeep_last = 1\n{}",
            FAST.replace("sample_every = 0", "sample_every = 2")
                .replace("eval_every = 0", "eval_every = 2")
        ),
    )
    .unwrap();
    let out = flowlens_in(dir.path())
        .args([
            "train",
            "--preset",
            "tiny",
            "--steps",
            "4",
            "--checkpoint-every",
            "1",
            "--quiet",
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--run")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = read_metrics(&run);
    let events = |name: &str| {
        metrics
            .iter()
            .filter(|v| v["event"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(events("eval").len(), 2);
    assert!(events("eval")[0]["adherence"]["overall"].as_f64().is_some());
    assert_eq!(events("samples").len(), 2);
    assert_eq!(events("prior").len(), 1);
    assert_eq!(events("data")[0]["items"], 96);
    let grid = std::fs::read(run.join("samples/grid-step00000004.png")).unwrap();
    assert_eq!(&grid[1..4], b"PNG");
    let best: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoints/best.json")).unwrap()).unwrap();
    assert_eq!(best["metric"], "adherence");
    let best_dir = run.join(format!(
        "checkpoints/step-{:08}",
        best["step"].as_u64().unwrap()
    ));
    assert!(best_dir.join("ema2.mpk").is_file(), "{best_dir:?}");
    assert!(run.join("checkpoints/step-00000004").is_dir());
    // keep_last = 1 plus the best: nothing else survives.
    let kept = std::fs::read_dir(run.join("checkpoints")).unwrap().count();
    assert!(kept <= 3, "{kept} entries");

    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "a small red circle\na large blue square\n").unwrap();
    let sample = |extra: &[&str]| {
        let out = flowlens()
            .args([
                "sample",
                "--steps",
                "3",
                "--taps",
                "enc.text,llm.h02.text,llm.h04.image",
                "--quiet",
            ])
            .arg("--run")
            .arg(&run)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sample(&[
        "--prompts",
        prompts.to_str().unwrap(),
        "--checkpoint",
        "best",
        "--weights",
        "ema2",
        "--f16",
        "--previews",
        "--cka-pairs",
        "enc.text:llm.h02.text,llm.h02.text:llm.h04.image",
    ]);
    let probe = flowlens_core::npy::NpyArray::read(probes(&run).probe("llm.h02.text", 0)).unwrap();
    assert_eq!(probe.dtype, flowlens_core::npy::NpyDtype::F16);
    assert_eq!(probe.shape, vec![3, 2, 128]);
    assert!(probe.as_f32().iter().all(|v| v.is_finite()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(probes(&run).manifest()).unwrap()).unwrap();
    assert_eq!(manifest["dtype"], "f16");
    assert_eq!(manifest["weights"], "ema2");
    assert_eq!(manifest["checkpoint_step"], best["step"]);
    for k in 0..3 {
        let png = std::fs::read(probes(&run).preview_png(0, 1, k)).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
    let live: serde_json::Value =
        serde_json::from_slice(&std::fs::read(probes(&run).live_cka()).unwrap()).unwrap();
    assert_eq!(live["pairs"].as_array().unwrap().len(), 2);
    assert_eq!(live["pairs"][0]["steps"].as_array().unwrap().len(), 3);
    assert_eq!(live["pairs"][0]["steps"][2]["n"], 2);

    sample(&["--interpolant", "0.2,0.8", "--n", "5", "--seeds", "0,1"]);
    let interpolant = StorePaths::new(&run, StoreName::interpolant());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(interpolant.manifest()).unwrap()).unwrap();
    assert_eq!(manifest["mode"], "interpolant");
    let times: Vec<f64> = serde_json::from_value(manifest["times"].clone()).unwrap();
    assert!(times.len() == 2 && (times[0] - 0.2).abs() < 1e-6 && (times[1] - 0.8).abs() < 1e-6);
    assert_eq!(manifest["seeds"], serde_json::json!([0, 1]));
    let p = flowlens_core::npy::NpyArray::read(interpolant.probe("enc.text", 1)).unwrap();
    assert_eq!(p.shape, vec![2, 5, 128]);
}

#[test]
fn training_on_an_image_folder_counts_the_corrupt_files_and_empty_data_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    std::fs::create_dir_all(&data).unwrap();
    for (i, rgb) in [[220u8, 40, 40], [40, 80, 220], [40, 170, 60]]
        .iter()
        .enumerate()
    {
        let img = image::RgbImage::from_pixel(48, 40, image::Rgb(*rgb));
        img.save(data.join(format!("img{i}.png"))).unwrap();
        std::fs::write(
            data.join(format!("img{i}.txt")),
            format!("a flat colour number {i}"),
        )
        .unwrap();
    }
    std::fs::write(data.join("broken.jpg"), b"\xff\xd8 truncated").unwrap();
    std::fs::write(data.join("broken.txt"), "never used").unwrap();
    let run = dir.path().join("run");
    let args = |run: &Path, data: &Path| {
        let mut a = train_args(run, &["--data"]);
        a.push(format!("folder:{}", data.display()));
        a
    };
    let out = flowlens_in(dir.path())
        .args(args(&run, &data))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = read_metrics(&run);
    let data_event = metrics.iter().find(|v| v["event"] == "data").unwrap();
    assert_eq!(data_event["items"], 3);
    assert_eq!(data_event["skipped"], 1);
    assert!(
        data_event["skipped_examples"][0]
            .as_str()
            .unwrap()
            .contains("broken.jpg")
    );
    assert_eq!(
        metrics.iter().filter(|v| v.get("loss").is_some()).count(),
        6
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["data"]["kind"], "folder");

    // Only undecodable images: a clear error, not a crash.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.png"), b"nope").unwrap();
    std::fs::write(bad.join("x.txt"), "caption").unwrap();
    let out = flowlens_in(dir.path())
        .args(args(&dir.path().join("run2"), &bad))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no usable") && err.contains("x.png"),
        "{err}"
    );
}
