//! Hostile and careless use of `flowlens`, through the binary (issue 13): two writers on one
//! run, a folder that is not a run, a failed start retried, values out of range, unknown taps,
//! a damaged checkpoint, changed data, decompression bombs, oversized VAE inputs, tiny bootstraps,
//! stale outputs. Every case is a clear error naming what is wrong, or a counted skip, and never
//! harms what was there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowlens_core::run::RunLock;
use flowlens_core::store::{StoreName, StorePaths};

/// `flowlens` with its caches in `dir/cache`.
fn flowlens(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowlens"));
    c.env("FLOWLENS_CACHE", dir.join("cache"));
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

/// The error of a command that must fail with exit code 1 (an error, never a panic's 101).
fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    stderr(&out)
}

/// A fast tiny-preset config (random LLM: no prior to train) plus `extra` TOML lines.
fn config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "{extra}\nsample_every = 0\neval_every = 0\nbatch_size = 2\nllm_init = \"random\"\n[data]\nkind = \"shapes\"\nseed = 0\nlen = 16\n"
        ),
    )
    .unwrap();
    path
}

fn train(dir: &Path, run: &Path, config: &Path, steps: usize, extra: &[&str]) -> Command {
    let mut c = flowlens(dir);
    c.args([
        "train",
        "--preset",
        "tiny",
        "--quiet",
        "--checkpoint-every",
        "2",
    ])
    .arg("--steps")
    .arg(steps.to_string())
    .arg("--config")
    .arg(config)
    .arg("--run")
    .arg(run)
    .args(extra);
    c
}

/// Step -> number of step records in a run's metrics.
fn step_counts(run: &Path) -> BTreeMap<u64, usize> {
    let mut out = BTreeMap::new();
    for l in std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v.get("event").is_none() {
            *out.entry(v["step"].as_u64().unwrap()).or_default() += 1;
        }
    }
    out
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_writer_is_refused_with_the_holders_pid_and_the_first_is_unharmed() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = config(tmp.path(), "fast", "");
    let first = train(tmp.path(), &run, &cfg, 40, &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    wait_for("the first checkpoint", Duration::from_secs(120), || {
        RunLock::holder(&run).is_some() && flowlens_core::checkpoint::latest_step(&run) >= 2
    });
    assert_eq!(RunLock::holder(&run).unwrap().pid, pid);
    for second in [
        train(tmp.path(), &run, &cfg, 60, &["--resume"])
            .output()
            .unwrap(),
        {
            let prompts = tmp.path().join("p.txt");
            std::fs::write(&prompts, "a red circle\n").unwrap();
            flowlens(tmp.path())
                .args(["sample", "--steps", "2", "--quiet", "--run"])
                .arg(&run)
                .arg("--prompts")
                .arg(&prompts)
                .output()
                .unwrap()
        },
    ] {
        let e = fails(second);
        assert!(
            e.contains("being written by another process") && e.contains(&format!("pid {pid}")),
            "{e}"
        );
    }
    let out = first.wait_with_output().unwrap();
    ok(out);
    let counts = step_counts(&run);
    assert_eq!(counts.len(), 40);
    assert!(
        counts.values().all(|&n| n == 1),
        "every step logged once: {counts:?}"
    );
    assert!(
        RunLock::holder(&run).is_none(),
        "the lock dies with its writer"
    );
}

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

#[test]
fn a_folder_that_is_not_a_run_is_left_byte_identical_and_a_failed_start_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/llama/tiny-llama");
    std::fs::create_dir_all(&victim).unwrap();
    for e in std::fs::read_dir(&model).unwrap().flatten() {
        std::fs::copy(e.path(), victim.join(e.file_name())).unwrap();
    }
    let before = snapshot(&victim);
    let cfg = config(tmp.path(), "fast", "");
    let e = fails(train(tmp.path(), &victim, &cfg, 1, &[]).output().unwrap());
    assert!(
        e.contains("not a flowlens run") && e.contains("model.safetensors"),
        "{e}"
    );
    assert_eq!(snapshot(&victim), before, "nothing in the folder changed");

    // A start that fails (no such data) leaves no run: the same command with good data works
    // without --resume.
    let run = tmp.path().join("retry");
    let e = fails(
        train(
            tmp.path(),
            &run,
            &cfg,
            2,
            &["--data", "folder:/nonexistent/images"],
        )
        .output()
        .unwrap(),
    );
    assert!(e.contains("/nonexistent/images"), "{e}");
    assert!(!run.join("manifest.json").exists());
    ok(train(tmp.path(), &run, &cfg, 2, &[]).output().unwrap());
    // A different configuration on resume names the field.
    let other = config(tmp.path(), "other", "lr = 0.002");
    let e = fails(
        train(tmp.path(), &run, &other, 4, &["--resume"])
            .output()
            .unwrap(),
    );
    assert!(e.contains("these fields differ: lr"), "{e}");
}

#[test]
fn values_out_of_range_and_malformed_are_refused_with_the_field_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, (toml, field)) in [
        ("grad_clip = -1.0", "grad_clip"),
        ("llm_lr = -1.0", "llm_lr"),
        ("eval_every = 2\neval_n = 0", "eval_n"),
        ("llm_init = \"prior\"\n[prior]\nsteps = 0", "prior.steps"),
        (
            "llm_init = \"prior\"\n[prior]\nseq_len = 0",
            "prior.seq_len",
        ),
        (
            "llm_init = \"prior\"\n[prior]\nseq_len = 1",
            "prior.seq_len",
        ),
        ("steps = \"two\"", "steps"),
        ("lr = nan", "lr"),
        ("t_std = inf", "t_std"),
    ]
    .into_iter()
    .enumerate()
    {
        // The bad line replaces the default one (TOML keys must be unique): put it in its own
        // file that sets everything else.
        let path = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let run = tmp.path().join(format!("r{i}"));
        let out = flowlens(tmp.path())
            .args(["train", "--preset", "tiny", "--steps", "2", "--quiet"])
            .arg("--config")
            .arg(&path)
            .arg("--run")
            .arg(&run)
            .output()
            .unwrap();
        let e = fails(out);
        assert!(e.contains(&format!("`{field}`")), "{toml}: {e}");
        assert!(!run.join("manifest.json").exists(), "{toml}: no run made");
    }
    // A flag value too large for f64 reads as what it became.
    let e = fails(
        flowlens(tmp.path())
            .args([
                "train", "--preset", "tiny", "--steps", "2", "--lr", "1e400", "--run",
            ])
            .arg(tmp.path().join("huge-lr"))
            .output()
            .unwrap(),
    );
    assert!(e.contains("`lr`") && e.contains("not inf"), "{e}");
}

#[test]
fn sampling_refuses_unknown_taps_and_bad_guidance_and_replaces_stale_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = config(tmp.path(), "fast", "");
    ok(train(tmp.path(), &run, &cfg, 2, &[]).output().unwrap());
    let prompts = tmp.path().join("p.txt");
    std::fs::write(
        &prompts,
        "a red circle\na big blue square above a small green triangle on the left of a yellow circle\n",
    )
    .unwrap();
    let sample = |extra: &[&str]| {
        flowlens(tmp.path())
            .args(["sample", "--steps", "2", "--quiet", "--run"])
            .arg(&run)
            .arg("--prompts")
            .arg(&prompts)
            .args(extra)
            .output()
            .unwrap()
    };
    for (args, says) in [
        (vec!["--taps", "llm.h99"], "llm.h99"),
        (vec!["--taps", "nosuch"], "nosuch"),
        (
            vec!["--taps", "enc.text", "--cka-pairs", "enc.text:nosuch"],
            "`nosuch` is not a tap",
        ),
        (
            vec!["--taps", "enc.text", "--cka-pairs", "enc.text:enc.noise"],
            "`enc.noise` is not sampled",
        ),
        (vec!["--cfg", "NaN"], "finite"),
        (vec!["--cfg", "inf"], "finite"),
    ] {
        let e = fails(sample(&args));
        assert!(e.contains(says), "{args:?}: {e}");
        if args[1].starts_with("llm.h99") {
            assert!(
                e.contains("enc.text") && e.contains("llm.h00 to llm.h04"),
                "{e}"
            );
        }
    }
    let paths = StorePaths::new(&run, StoreName::sample());
    let e = ok(sample(&["--taps", "enc.text,enc.noise", "--seeds", "0,1"]));
    assert!(
        e.contains("1 of 2 prompts are longer than this model's 16 text tokens"),
        "{e}"
    );
    assert!(paths.tap_dir("enc.noise").is_dir() && paths.samples(1).is_dir());
    ok(sample(&["--taps", "enc.text"]));
    assert!(
        !paths.tap_dir("enc.noise").exists() && !paths.samples(1).exists(),
        "no stale tap or seed of the earlier call"
    );
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let cfg = config(tmp.path(), "fast", "keep_last = 3");
    ok(train(tmp.path(), &run, &cfg, 4, &[]).output().unwrap());
    let newest = flowlens_core::checkpoint::step_dir(&run, 4).join("model.mpk");
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let e = ok(train(tmp.path(), &run, &cfg, 6, &["--resume"])
        .output()
        .unwrap());
    assert!(
        e.contains("warning") && e.contains("model.mpk") && e.contains("step 2"),
        "{e}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains(r#""from_step":2"#), "resumed from step 2");
    assert_eq!(step_counts(&run).len(), 6);
    // When nothing loads, the error names the file and what to do.
    for s in [2, 4, 6] {
        let dir = flowlens_core::checkpoint::step_dir(&run, s);
        if dir.is_dir() {
            std::fs::write(dir.join("ema.mpk"), b"not a record").unwrap();
        }
    }
    let e = fails(
        train(tmp.path(), &run, &cfg, 8, &["--resume"])
            .output()
            .unwrap(),
    );
    assert!(
        e.contains("no checkpoint of the run loads") && e.contains("ema.mpk"),
        "{e}"
    );
}

/// An image folder of `n` small PNGs with captions.
fn image_folder(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, (i * 60) as u8])
        });
        img.save(dir.join(format!("{i}.png"))).unwrap();
        std::fs::write(dir.join(format!("{i}.txt")), format!("picture number {i}")).unwrap();
    }
}

/// A 12000 x 12000 1-bit PNG: tens of KB on disk, 144 megapixels decoded.
fn bomb(path: &Path) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut enc = png::Encoder::new(file, 12_000, 12_000);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
    let row = vec![0u8; 1500];
    for _ in 0..12_000 {
        std::io::Write::write_all(&mut w, &row).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn decompression_bombs_are_skipped_and_counted_and_changed_data_stops_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("images");
    image_folder(&data, 3);
    bomb(&data.join("bomb.png"));
    std::fs::write(data.join("bomb.txt"), "a bomb").unwrap();
    assert!(std::fs::metadata(data.join("bomb.png")).unwrap().len() < 1_000_000);
    let run = tmp.path().join("run");
    let cfg = config(tmp.path(), "fast", "");
    let spec = format!("folder:{}", data.display());
    ok(train(tmp.path(), &run, &cfg, 2, &["--data", &spec])
        .output()
        .unwrap());
    let first = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let event: serde_json::Value = first
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "data")
        .unwrap();
    assert_eq!(event["items"], 3);
    assert_eq!(event["skipped"], 1);
    let why = event["skipped_examples"][0].as_str().unwrap();
    assert!(
        why.contains("bomb.png") && why.contains("megapixels"),
        "{why}"
    );

    // The data changes: a resume would train on another set, and says so.
    image::RgbImage::from_pixel(16, 16, image::Rgb([9, 9, 9]))
        .save(data.join("0.png"))
        .unwrap();
    let e = fails(
        train(tmp.path(), &run, &cfg, 4, &["--resume", "--data", &spec])
            .output()
            .unwrap(),
    );
    assert!(e.contains("trained on other data"), "{e}");
}

#[test]
fn oversized_vae_inputs_are_refused_with_the_size_named() {
    let tmp = tempfile::tempdir().unwrap();
    let vae = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/vae/d4");
    let big = tmp.path().join("big.png");
    image::RgbImage::from_pixel(2048, 2048, image::Rgb([120, 30, 200]))
        .save(&big)
        .unwrap();
    let run = |args: &[&str]| {
        flowlens(tmp.path())
            .env("FLOWLENS_MEMORY_GB", "2")
            .args(["vae"])
            .args(args)
            .arg("--model")
            .arg(&vae)
            .output()
            .unwrap()
    };
    let out = tmp.path().join("z.npy");
    let e = fails(run(&[
        "encode",
        big.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(e.contains("2048x2048") && e.contains("GB"), "{e}");
    assert!(!out.exists());
    let latent = tmp.path().join("z512.npy");
    flowlens_core::npy::write_f32(&latent, &[1, 4, 512, 512], &vec![0.0; 4 * 512 * 512]).unwrap();
    let e = fails(run(&[
        "decode",
        latent.to_str().unwrap(),
        "--out",
        tmp.path().join("x.png").to_str().unwrap(),
    ]));
    assert!(e.contains("4096x4096") && e.contains("GB"), "{e}");
    // Latents are .npy: another extension is refused, not written with .npy bytes.
    let small = tmp.path().join("small.png");
    image::RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]))
        .save(&small)
        .unwrap();
    let e = fails(run(&[
        "encode",
        small.to_str().unwrap(),
        "--out",
        tmp.path().join("z.png").to_str().unwrap(),
    ]));
    assert!(e.contains(".npy"), "{e}");
}

#[test]
fn a_bootstrap_over_a_handful_of_samples_drops_and_counts_degenerate_resamples() {
    let tmp = tempfile::tempdir().unwrap();
    let (x, y) = (tmp.path().join("x.npy"), tmp.path().join("y.npy"));
    flowlens_core::npy::write_f32(
        &x,
        &[4, 3],
        &[1., 0., 2., 3., 1., 0., 0., 2., 1., 5., 5., 1.],
    )
    .unwrap();
    flowlens_core::npy::write_f32(&y, &[4, 2], &[0., 1., 2., 2., 1., 3., 4., 0.]).unwrap();
    let out = flowlens(tmp.path())
        .args(["cka", "--bootstrap", "2000", "--json"])
        .arg(&x)
        .arg(&y)
        .output()
        .unwrap();
    ok(out.clone());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ci = &v["biased_ci"];
    let dropped = ci["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "{v}");
    assert_eq!(ci["replicates"].as_u64().unwrap() + dropped, 2000);
    let text = flowlens(tmp.path())
        .args(["cka", "--bootstrap", "2000"])
        .arg(&x)
        .arg(&y)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("resamples dropped"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
}

#[test]
fn a_grid_of_a_missing_run_writes_nothing_and_llm_features_replaces_its_earlier_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .current_dir(tmp.path())
        .args(["grid", "--run", "no/such/run", "--quiet"])
        .output()
        .unwrap();
    let e = fails(out);
    assert!(e.contains("no/such/run"), "{e}");
    assert!(
        !tmp.path().join("runs").exists(),
        "no experiment folder made"
    );

    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/llama/tiny-llama");
    let prompts = tmp.path().join("p.txt");
    std::fs::write(&prompts, "hello world\nanother prompt\n").unwrap();
    let feats = tmp.path().join("feats");
    let llm = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flowlens"))
            .args(["llm-features", "--quiet"])
            .arg("--model")
            .arg(&model)
            .arg("--prompts")
            .arg(&prompts)
            .arg("--out")
            .arg(&feats)
            .args(extra)
            .output()
            .unwrap()
    };
    ok(llm(&["--layers", "0,1"]));
    ok(llm(&["--layers", "2"]));
    let mut names: Vec<String> = std::fs::read_dir(&feats)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "attention_mask.npy",
            "input_ids.npy",
            "layer_02.npy",
            "meta.json"
        ]
    );
    let e = fails(llm(&["--max-len", "0"]));
    assert!(e.contains("--max-len 0"), "{e}");

    // A config that states 10^9 layers is one message, found before anything is enumerated.
    let huge = tmp.path().join("huge-llama");
    std::fs::create_dir_all(&huge).unwrap();
    for e in std::fs::read_dir(&model).unwrap().flatten() {
        std::fs::copy(e.path(), huge.join(e.file_name())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(huge.join("config.json")).unwrap()).unwrap();
    config["num_hidden_layers"] = serde_json::json!(1_000_000_000u64);
    std::fs::write(huge.join("config.json"), config.to_string()).unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(["llm-features", "--quiet"])
        .arg("--model")
        .arg(&huge)
        .arg("--prompts")
        .arg(&prompts)
        .arg("--out")
        .arg(tmp.path().join("huge"))
        .output()
        .unwrap();
    let e = fails(out);
    assert!(e.contains("num_hidden_layers = 1000000000"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // Weights with a NaN are named, not turned into NaN features.
    let bad = tmp.path().join("bad-llama");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(&model).unwrap().flatten() {
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let st =
        flowlens_core::weights::SafetensorsFile::open(model.join("model.safetensors")).unwrap();
    let tensors = st
        .names()
        .into_iter()
        .map(|name| {
            let shape = st.shape(&name).unwrap().to_vec();
            let mut values = st.read_f32(&name, &shape).unwrap();
            if name == "model.layers.1.mlp.up_proj.weight" {
                values[7] = f32::NAN;
            }
            (name, shape, values)
        })
        .collect();
    flowlens_core::weights::write_safetensors_f32(&bad.join("model.safetensors"), tensors).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowlens"))
        .args(["llm-features", "--quiet"])
        .arg("--model")
        .arg(&bad)
        .arg("--prompts")
        .arg(&prompts)
        .arg("--out")
        .arg(tmp.path().join("nan"))
        .output()
        .unwrap();
    let e = fails(out);
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("non-finite"),
        "{e}"
    );
}
