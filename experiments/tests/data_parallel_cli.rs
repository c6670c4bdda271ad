//! Data-parallel training through the binary (issue 16): the same command on two CPU replicas
//! and on one device trains on the same items to the same losses and parameters, the replicas
//! stay bit for bit identical after every step, a two-device run killed with SIGKILL resumes to
//! exactly the uninterrupted run's losses, and a batch that does not split is a clear error.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use flowlens_core::checkpoint::{CheckpointChoice, Weights, load_run_model};
use flowlens_core::device::CpuBackend;

mod common;
use common::flowlens_in;
use common::losses;

/// Stage 1 for 8 steps, then stage 2 (the LLM's gradients join the exchange), two micro-batches
/// per step (accumulation before the exchange), little data, no evaluation.
const CONFIG: &str = "sample_every = 0\neval_every = 0\nstage1_steps = 8\ngrad_accum = 2\n\
                      batch_size = 4\ncheckpoint_every = 5\n[prior]\nsteps = 12\nbatch_size = 16\n\
                      [data]\nkind = \"shapes\"\nseed = 0\nlen = 96\n";

fn train_args(run: &Path, extra: &[&str]) -> Vec<String> {
    let parent = run.parent().unwrap();
    let config = parent.join("dp.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut args: Vec<String> = ["train", "--preset", "tiny", "--variant", "both", "--steps"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend([
        "20".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--quiet".into(),
        "--run".into(),
        run.display().to_string(),
    ]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn train(dir: &Path, run: &Path, extra: &[&str]) {
    let out = flowlens_in(dir)
        .args(train_args(run, extra))
        .output()
        .unwrap();
    common::assert_ok(&out);
}

/// Every parameter of the run's latest checkpoint (training weights), in module order.
fn parameters(run: &Path) -> Vec<f32> {
    struct Values(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0
                .extend(param.val().into_data().to_vec::<f32>().unwrap());
        }
    }
    let loaded = load_run_model::<CpuBackend>(
        run,
        Weights::Model,
        CheckpointChoice::Latest,
        &Default::default(),
    )
    .unwrap();
    let mut v = Values(Vec::new());
    loaded.model.visit(&mut v);
    v.0
}

#[test]
fn two_cpu_replicas_train_as_one_device_does_and_stay_identical() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    train(dir.path(), &one, &["--devices", "cpu:0"]);
    // Every replica is compared with the first after every step (the run fails otherwise).
    train(
        dir.path(),
        &two,
        &["--devices", "cpu:0,cpu:1", "--check-replicas", "1"],
    );
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 20);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (step, la) in &a {
        let lb = b[step];
        assert!(
            ((la - lb) / la).abs() < 1e-5,
            "step {step}: {la} on one device, {lb} on two"
        );
    }
    let (pa, pb) = (parameters(&one), parameters(&two));
    assert_eq!(pa.len(), pb.len());
    let worst = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "final parameters differ by up to {worst}");
    assert!(pa != pb || worst == 0.0);
}

#[test]
fn a_two_device_run_killed_and_resumed_repeats_the_uninterrupted_losses() {
    let dir = tempfile::tempdir().unwrap();
    let devices = ["--devices", "cpu:0,cpu:1"];
    let whole = dir.path().join("whole");
    train(dir.path(), &whole, &devices);
    let expected = losses(&whole);
    assert_eq!(expected.len(), 20);
    let killed = dir.path().join("killed");
    let mut child = flowlens_in(dir.path())
        .args(train_args(&killed, &devices))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the checkpoint of step 10 is there, somewhere in the steps after it.
    let start = Instant::now();
    while !killed.join("checkpoints/step-00000010").is_dir()
        && start.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = losses(&killed).len();
    assert!((10..20).contains(&before), "killed after {before} steps");
    train(
        dir.path(),
        &killed,
        &[&["--resume"][..], &devices[..]].concat(),
    );
    let got = losses(&killed);
    assert_eq!(got.len(), 20);
    for (step, want) in &expected {
        assert_eq!(
            got[step].to_bits(),
            want.to_bits(),
            "step {step}: {} after the resume, {want} uninterrupted",
            got[step]
        );
    }
}

#[test]
fn a_batch_that_does_not_split_over_the_devices_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("odd");
    let out = flowlens_in(dir.path())
        .args(train_args(
            &run,
            &["--devices", "cpu:0,cpu:1,cpu:2", "--batch-size", "4"],
        ))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("batch size 4 is not a multiple of the 3 devices"),
        "{err}"
    );
    assert!(!run.exists(), "nothing is written before the check");
    for bad in ["cpu:0,cpu:0", "cpu:0,cuda:0"] {
        let out = flowlens_in(dir.path())
            .args(train_args(&dir.path().join("bad"), &["--devices", bad]))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--devices"), "{bad}: {err}");
    }
}
