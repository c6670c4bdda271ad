//! `flowlens eval` end to end on a tiny self-made MJHQ-format folder: a tiny trained run, the
//! tiny fixture CLIP (core/tests/fixtures/clip) and the FID Inception with its deterministic
//! stand-in weights; evaluation during training (metrics record) and `flowlens eval` (results
//! and history in the run), the reference statistics cached once and reused.

use std::path::Path;
use std::process::Command;

fn flowlens(cache: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowlens"));
    c.env("FLOWLENS_CACHE", cache);
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 40 x 40 noise image: incompressible, so every such PNG has the same byte length.
fn noise_png(path: &Path, seed: u32) {
    let mut state = seed.wrapping_mul(2_654_435_761) | 1;
    let img = image::RgbImage::from_fn(40, 40, |_, _| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        };
        image::Rgb([next(), next(), next()])
    });
    img.save(path).unwrap();
}

/// Four noise images in two categories, as MJHQ-30k lays them out.
fn benchmark(dir: &Path) {
    let mut meta = serde_json::Map::new();
    for i in 0..4u32 {
        let category = ["animals", "people"][i as usize % 2];
        std::fs::create_dir_all(dir.join(category)).unwrap();
        let id = format!("{:08x}", 0xabc0 + i);
        meta.insert(
            id.clone(),
            serde_json::json!({"category": category, "prompt": format!("a red circle number {i}")}),
        );
        noise_png(&dir.join(category).join(format!("{id}.png")), i + 1);
    }
    std::fs::write(
        dir.join("meta_data.json"),
        serde_json::Value::Object(meta).to_string(),
    )
    .unwrap();
}

#[test]
fn training_and_eval_score_a_run_on_an_mjhq_folder_and_share_cached_reference_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let run = tmp.path().join("run");
    let config = tmp.path().join("fast.toml");
    std::fs::write(
        &config,
        "sample_every = 0\neval_every = 0\nbatch_size = 4\n[prior]\nsteps = 4\nbatch_size = 8\n[data]\nkind = \"shapes\"\nseed = 0\nlen = 32\n",
    )
    .unwrap();
    let bench = tmp.path().join("mjhq");
    benchmark(&bench);
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/fixtures/clip/tiny-clip");
    // Training evaluates its step-2 checkpoint on the benchmark (seed 0)...
    ok(flowlens(&cache)
        .args([
            "train",
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--checkpoint-every",
            "2",
            "--quiet",
        ])
        .args([
            "--mjhq-every",
            "2",
            "--mjhq-n",
            "4",
            "--mjhq-inception",
            "formula",
            "--mjhq-steps",
            "2",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--run")
        .arg(&run)
        .arg("--mjhq")
        .arg(&bench)
        .arg("--mjhq-clip")
        .arg(&clip));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let record: serde_json::Value = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "eval_mjhq")
        .expect("an eval_mjhq record in metrics.jsonl");
    assert_eq!(record["step"], 2);
    let fid = record["fid"].as_f64().unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    // The ablation summary reads the record.
    let summary =
        flowlens_experiments::ablation::analyse::summarise_run("both", 0, &run, 4).unwrap();
    assert_eq!(summary.mjhq.len(), 1);
    assert_eq!((summary.mjhq[0].step, summary.mjhq[0].fid), (2, fid));
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/mjhq-step00000002.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(result["n"], 4);
    assert_eq!(result["step"], 2);
    assert_eq!(result["fid"]["mean"].as_f64().unwrap(), fid);
    let clip_score = result["clip_score"]["mean"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&clip_score), "{clip_score}");
    let stats = Path::new(result["reference_stats"].as_str().unwrap()).to_path_buf();
    assert!(
        stats.join("all/mu.npy").is_file() && stats.join("category/people/sigma.npy").is_file()
    );
    let cached = std::fs::metadata(stats.join("meta.json"))
        .unwrap()
        .modified()
        .unwrap();

    // ... and `flowlens eval` (another seed, per category) reuses the reference statistics.
    let eval = |seeds: &str| {
        let mut c = flowlens(&cache);
        c.args([
            "eval",
            "--n",
            "4",
            "--per-category",
            "--inception",
            "formula",
            "--steps",
            "2",
            "--quiet",
        ])
        .args(["--seeds", seeds])
        .arg("--run")
        .arg(&run)
        .arg("--benchmark")
        .arg(&bench)
        .arg("--clip")
        .arg(&clip);
        c
    };
    let out = ok(&mut eval("1"));
    assert!(out.contains("FID") && out.contains("CLIP score"), "{out}");
    assert_eq!(
        std::fs::metadata(stats.join("meta.json"))
            .unwrap()
            .modified()
            .unwrap(),
        cached
    );
    let result: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/mjhq-step00000002.json")).unwrap(),
    )
    .unwrap();
    for category in ["animals", "people"] {
        let v = result["fid_per_category"][category]["mean"]
            .as_f64()
            .unwrap();
        assert!(v.is_finite() && v > 0.0, "{category}: {v}");
    }
    let history = std::fs::read_to_string(run.join("eval/history.jsonl")).unwrap();
    assert_eq!(history.lines().count(), 2);
    let second: serde_json::Value = serde_json::from_str(history.lines().nth(1).unwrap()).unwrap();
    assert_eq!(second["seeds"], serde_json::json!([1]));
    assert_ne!(
        second["fid"].as_f64().unwrap(),
        fid,
        "another seed, other images"
    );

    // A reference image replaced by another of the same byte length is new data: the cached
    // statistics are not reused (they were keyed on path and length before).
    let replaced = bench.join("people/0000abc3.png");
    let length = std::fs::metadata(&replaced).unwrap().len();
    noise_png(&replaced, 99);
    assert_eq!(std::fs::metadata(&replaced).unwrap().len(), length);
    ok(&mut eval("1"));
    let again: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("eval/mjhq-step00000002.json")).unwrap(),
    )
    .unwrap();
    assert_ne!(
        Path::new(again["reference_stats"].as_str().unwrap()),
        stats,
        "the statistics are computed again"
    );
    assert_ne!(again["fid"]["mean"], result["fid"]["mean"]);

    // A benchmark entry without its image is named.
    std::fs::remove_file(bench.join("people/0000abc1.png")).unwrap();
    let out = eval("0").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("0000abc1"), "{err}");
}
