//! Human preference studies end to end through the binary (issue 17, STUDY.md 5.9 tests 4-7):
//! new -> plan -> lock -> export-html -> simulate (the page's schema) -> import -> unblind ->
//! analyze, with the blinding, self-containment, determinism and round-trip checks.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use common::{assert_ok, flowlens_in, run};
use sha2::{Digest, Sha256};

fn ok(args: &[&str]) -> String {
    let (success, out, err) = run(args);
    assert!(success, "flowlens {args:?} failed:\n{out}\n{err}");
    out
}

fn fails(args: &[&str]) -> String {
    let (success, out, err) = run(args);
    assert!(!success, "flowlens {args:?} should fail:\n{out}");
    err
}

/// Two image folders (systems) of `n` prompts: coloured squares, one per prompt, different per
/// system; a TSV prompts file with categories.
fn folders(dir: &Path, n: usize) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b) = (dir.join("model-ours"), dir.join("model-base"));
    for (k, folder) in [&a, &b].into_iter().enumerate() {
        std::fs::create_dir_all(folder).unwrap();
        for p in 0..n {
            let img = image::RgbImage::from_fn(24, 24, |x, y| {
                let v = ((x * 7 + y * 3 + p as u32 * 11 + k as u32 * 60) % 256) as u8;
                image::Rgb([v, (p * 20) as u8, (k * 120) as u8])
            });
            img.save(folder.join(format!("p{p:04}_0.png"))).unwrap();
        }
    }
    let prompts = dir.join("prompts.tsv");
    let mut text = String::from("Prompt\tCategory\n");
    for p in 0..n {
        text += &format!(
            "a {} square number {p}\t{}\n",
            ["red", "blue"][p % 2],
            ["colour", "count"][p % 2]
        );
    }
    std::fs::write(&prompts, text).unwrap();
    (a, b, prompts)
}

fn new_study(dir: &Path, study: &Path, n: usize, raters: usize) {
    let (a, b, prompts) = folders(dir, n);
    ok(&[
        "study",
        "new",
        study.to_str().unwrap(),
        "--systems",
        &format!("qxours=images:{}", a.display()),
        &format!("qxbase=images:{}", b.display()),
        "--prompts",
        prompts.to_str().unwrap(),
        "--raters",
        &raters.to_string(),
        "--seed",
        "3",
        "--reproducible",
        "--quiet",
    ]);
}

/// The bytes of a `data:image/<kind>;base64,` URI of the page.
fn data_uri_bytes(uri: &serde_json::Value, kind: &str) -> Vec<u8> {
    let prefix = format!("data:image/{kind};base64,");
    let b64 = uri.as_str().unwrap().strip_prefix(&prefix).unwrap();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn payload_of(html: &str) -> serde_json::Value {
    let start = html.find("id=\"study-data\">").unwrap() + "id=\"study-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

#[test]
fn a_study_runs_from_design_to_figure_and_reproduces_the_simulated_tallies() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("s1");
    let s = study.to_str().unwrap();
    new_study(tmp.path(), &study, 12, 8);
    // Nothing before the lock.
    let html = tmp.path().join("page.html");
    let e = fails(&["study", "export-html", s, "--out", html.to_str().unwrap()]);
    assert!(e.contains("study lock"), "{e}");
    let plan = ok(&["study", "plan", s, "--studies", "40"]);
    assert!(
        plan.contains("prompt floor") && plan.contains("verdict"),
        "{plan}"
    );
    ok(&["study", "lock", s]);
    ok(&["study", "lock", s]);
    ok(&["study", "export-html", s, "--out", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();

    // Blinding: no system name or folder path outside the images (whose base64 text can hold
    // any short string by chance; their bytes are checked below).
    let mut text = page.clone();
    while let Some(at) = text.find("data:image/png;base64,") {
        let end = at + text[at..].find('"').unwrap();
        text.replace_range(at..end, "");
    }
    for secret in [
        "qxours",
        "qxbase",
        "model-ours",
        "model-base",
        tmp.path().to_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "the page contains `{secret}`");
    }
    // Self-containment: the CSP, and no network reference in src, href or url().
    assert!(page.contains(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:;"
    ));
    for attr in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "url(http",
        "url(//",
    ] {
        assert!(!page.contains(attr), "{attr}");
    }
    // Every embedded image decodes, hashes to the manifest and matches the assignment.
    let data = payload_of(&page);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("manifest.json")).unwrap())
            .unwrap();
    let images = data["images"].as_object().unwrap();
    for (id, uri) in images {
        let bytes = data_uri_bytes(uri, "png");
        let img = image::load_from_memory(&bytes).unwrap();
        assert_eq!((img.width(), img.height()), (24, 24));
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(manifest["images"][id].as_str().unwrap(), sha, "{id}");
    }
    let raters = manifest["raters"].as_array().unwrap();
    assert_eq!(data["raters"].as_array().unwrap().len(), raters.len());
    for (page_rater, m) in data["raters"].as_array().unwrap().iter().zip(raters) {
        assert_eq!(page_rater["code"], m["code"]);
        for (pi, t) in page_rater["items"]
            .as_array()
            .unwrap()
            .iter()
            .zip(m["tasks"].as_array().unwrap())
        {
            for k in ["seq", "item", "kind", "criterion", "left", "right"] {
                assert_eq!(pi[k], t[k], "{k}");
            }
        }
    }
    // The images on disk carry no text or EXIF chunks.
    for entry in std::fs::read_dir(study.join("images")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let mut at = 8;
        while at + 8 <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let kind = std::str::from_utf8(&bytes[at + 4..at + 8]).unwrap();
            assert!(
                !["tEXt", "iTXt", "zTXt", "eXIf", "tIME"].contains(&kind),
                "{kind}"
            );
            at += 12 + len;
        }
    }

    // Simulated raters through the page's schema, one of them careless.
    let sim = tmp.path().join("sim");
    ok(&[
        "study",
        "simulate",
        s,
        "--share",
        "aesthetics=0.55,prompt_following=0.85",
        "--bad-raters",
        "1",
        "--seed",
        "5",
        "--out",
        sim.to_str().unwrap(),
    ]);
    let mut files: Vec<String> = std::fs::read_dir(&sim)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".flowlens-ratings.json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 8);
    // A tampered file is refused, and nothing is imported with it.
    let tampered = tmp.path().join("tampered.flowlens-ratings.json");
    let text = std::fs::read_to_string(&files[1]).unwrap();
    std::fs::write(
        &tampered,
        text.replacen(
            "\\\"choice\\\":\\\"left\\\"",
            "\\\"choice\\\":\\\"right\\\"",
            1,
        ),
    )
    .unwrap();
    let mut args = vec![
        "study",
        "import",
        s,
        files[0].as_str(),
        tampered.to_str().unwrap(),
    ];
    let e = fails(&args);
    assert!(
        e.contains("checksum mismatch") && e.contains("tampered"),
        "{e}"
    );
    assert!(
        !study.join("ratings").exists()
            || std::fs::read_dir(study.join("ratings")).unwrap().count() == 0
    );
    args.truncate(2);
    args.push(s);
    args.extend(files.iter().map(|f| f.as_str()));
    ok(&args);
    let again = ok(&args);
    assert!(again.contains("already imported"), "{again}");
    let status = ok(&["study", "status", s]);
    assert!(status.contains("0 not rated yet"), "{status}");
    // Analysis needs the key.
    let e = fails(&["study", "analyze", s]);
    assert!(e.contains("still blind"), "{e}");
    ok(&["study", "unblind", s]);
    let summary: serde_json::Value =
        serde_json::from_str(&ok(&["study", "analyze", s, "--json"])).unwrap();
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sim.join("truth.json")).unwrap()).unwrap();
    let bad = truth["bad_raters"][0].as_str().unwrap();
    let row = summary["raters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rater"] == bad)
        .unwrap();
    assert!(!row["excluded_by"].as_array().unwrap().is_empty(), "{row}");
    for p in summary["pairs"].as_array().unwrap() {
        let key = format!(
            "{}:{}:{}",
            p["criterion"].as_str().unwrap(),
            p["a"].as_str().unwrap(),
            p["b"].as_str().unwrap()
        );
        let counts = |t: &serde_json::Value| -> Vec<u64> {
            ["a", "b", "ties"].map(|k| t[k].as_u64().unwrap()).to_vec()
        };
        let truth_of = |which: &str| -> Vec<u64> {
            truth[which][&key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        };
        assert_eq!(
            counts(&p["tally"]),
            truth_of("good_tallies"),
            "{key} (included raters)"
        );
        assert_eq!(
            counts(&p["sensitivity"]["tally"]),
            truth_of("tallies"),
            "{key} (every rater)"
        );
        let w = p["win_rate"].as_f64().unwrap();
        let ci = &p["cluster_ci"];
        assert!(ci["lower"].as_f64().unwrap() <= w && w <= ci["upper"].as_f64().unwrap());
        assert!(p["sign_flip_p"].as_f64().is_some() && p["naive_p"].as_f64().is_some());
    }
    for f in [
        "summary.json",
        "tally.csv",
        "per_prompt.csv",
        "raters.csv",
        "agreement.csv",
        "table.tex",
        "report.md",
        "figure_preference.png",
        "figure_preference.svg",
    ] {
        assert!(study.join("analysis").join(f).is_file(), "{f}");
    }
    // table.tex against its snapshot (UPDATE_SNAPSHOTS=1 rewrites it).
    let table = std::fs::read_to_string(study.join("analysis/table.tex")).unwrap();
    let snap = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/study_table.tex");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
        std::fs::write(&snap, &table).unwrap();
    }
    assert_eq!(
        table,
        std::fs::read_to_string(&snap).unwrap(),
        "table.tex changed"
    );
    let report = std::fs::read_to_string(study.join("analysis/report.md")).unwrap();
    assert!(
        report.contains("two-way cluster bootstrap over prompts and raters"),
        "{report}"
    );
    let audit = std::fs::read_to_string(study.join("audit.log")).unwrap();
    for event in ["new:", "lock:", "export-html:", "import:", "unblind:"] {
        assert!(audit.contains(event), "{event} in {audit}");
    }
}

#[test]
fn the_same_study_file_and_seed_give_byte_identical_manifests_and_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("a/study"), tmp.path().join("b/study"));
    std::fs::create_dir_all(tmp.path().join("a")).unwrap();
    std::fs::create_dir_all(tmp.path().join("b")).unwrap();
    new_study(tmp.path(), &one, 6, 3);
    // The second study from the first one's study.toml.
    ok(&[
        "study",
        "new",
        two.to_str().unwrap(),
        "--from",
        one.join("study.toml").to_str().unwrap(),
        "--reproducible",
        "--quiet",
    ]);
    assert_eq!(
        std::fs::read(one.join("manifest.json")).unwrap(),
        std::fs::read(two.join("manifest.json")).unwrap()
    );
    for d in [&one, &two] {
        ok(&["study", "lock", d.to_str().unwrap()]);
        ok(&[
            "study",
            "export-html",
            d.to_str().unwrap(),
            "--out",
            d.join("page.html").to_str().unwrap(),
        ]);
    }
    assert_eq!(
        std::fs::read(one.join("page.html")).unwrap(),
        std::fs::read(two.join("page.html")).unwrap()
    );
    // One page per rater with JPEG images: every image decodes at the study's size.
    let pages = tmp.path().join("pages");
    ok(&[
        "study",
        "export-html",
        one.to_str().unwrap(),
        "--out",
        pages.to_str().unwrap(),
        "--per-rater",
        "--image-format",
        "jpeg",
        "--quality",
        "80",
    ]);
    let files: Vec<_> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3);
    for f in files {
        let data = payload_of(&std::fs::read_to_string(&f).unwrap());
        assert_eq!(data["raters"].as_array().unwrap().len(), 1);
        for uri in data["images"].as_object().unwrap().values() {
            let bytes = data_uri_bytes(uri, "jpeg");
            let img = image::load_from_memory(&bytes).unwrap();
            assert_eq!((img.width(), img.height()), (24, 24));
        }
    }
    let e = fails(&[
        "study",
        "export-html",
        one.to_str().unwrap(),
        "--out",
        "x.html",
        "--image-format",
        "gif",
    ]);
    assert!(e.contains("use png or jpeg"), "{e}");
    // Editing the design after `new` is refused at lock; a study dir is never overwritten.
    let e = fails(&[
        "study",
        "new",
        one.to_str().unwrap(),
        "--from",
        one.join("study.toml").to_str().unwrap(),
    ]);
    assert!(e.contains("not empty"), "{e}");
}

#[test]
fn bad_study_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, _, prompts) = folders(tmp.path(), 4);
    let study = tmp.path().join("s");
    let e = fails(&[
        "study",
        "new",
        study.to_str().unwrap(),
        "--systems",
        &format!("ours=images:{}", a.display()),
        "base=images:/does/not/exist",
        "--prompts",
        prompts.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(e.contains("base") && e.contains("/does/not/exist"), "{e}");
    let dup = tmp.path().join("dup.txt");
    std::fs::write(&dup, "a cat\na dog\na cat\n").unwrap();
    let e = fails(&[
        "study",
        "new",
        tmp.path().join("s2").to_str().unwrap(),
        "--systems",
        &format!("x=images:{}", a.display()),
        &format!("y=images:{}", a.display()),
        "--prompts",
        dup.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(e.contains("line 3 repeats line 1"), "{e}");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "format = 1\nname = \"x\"\nseed = \"one\"\n").unwrap();
    let e = fails(&[
        "study",
        "new",
        tmp.path().join("s3").to_str().unwrap(),
        "--from",
        bad.to_str().unwrap(),
    ]);
    assert!(e.contains("seed"), "{e}");
    // A corrupt image in a folder system is named.
    let (good, _, _) = folders(&tmp.path().join("c"), 4);
    std::fs::write(good.join("p0002_0.png"), b"\x89PNG not really").unwrap();
    let e = fails(&[
        "study",
        "new",
        tmp.path().join("s4").to_str().unwrap(),
        "--systems",
        &format!("x=images:{}", good.display()),
        &format!("y=images:{}", a.display()),
        "--prompts",
        prompts.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(e.contains("p0002_0.png") && e.contains("`x`"), "{e}");
}

/// Only [analysis] may change between `new` and `lock`; nothing after `lock`.
#[test]
fn the_design_is_frozen_at_new_and_everything_at_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("s");
    let s = study.to_str().unwrap();
    new_study(tmp.path(), &study, 4, 2);
    let toml = study.join("study.toml");
    let original = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, original.replace("count = 2", "count = 3")).unwrap();
    let e = fails(&["study", "lock", s]);
    assert!(
        e.contains("the design") && e.contains("changed since"),
        "{e}"
    );
    assert!(!study.join("lock.json").exists());
    std::fs::write(&toml, original.replace("alpha = 0.05", "alpha = 0.01")).unwrap();
    ok(&["study", "lock", s]);
    std::fs::write(&toml, original.replace("alpha = 0.05", "alpha = 0.02")).unwrap();
    let e = fails(&[
        "study",
        "export-html",
        s,
        "--out",
        tmp.path().join("p.html").to_str().unwrap(),
    ]);
    assert!(e.contains("changed after `study lock`"), "{e}");
    let e = fails(&["study", "lock", s]);
    assert!(
        e.contains("was locked at") && e.contains("has changed since"),
        "{e}"
    );
}

/// Images sampled from a trained run: two systems from one tiny run start from the same noise,
/// so their images are identical pixel for pixel (and still get different opaque ids).
#[test]
fn run_systems_share_the_initial_noise() {
    let tmp = tempfile::tempdir().unwrap();
    let runp = tmp.path().join("run");
    let out = flowlens_in(tmp.path())
        .args([
            "train", "--preset", "tiny", "--steps", "2", "--quiet", "--run",
        ])
        .arg(&runp)
        .output()
        .unwrap();
    assert_ok(&out);
    let prompts = tmp.path().join("p.txt");
    std::fs::write(&prompts, "a red circle\na blue square\na green triangle\n").unwrap();
    let study = tmp.path().join("study");
    let out = flowlens_in(tmp.path())
        .args(["study", "new"])
        .arg(&study)
        .arg("--systems")
        .arg(format!("one={}", runp.display()))
        .arg(format!("two={}@latest", runp.display()))
        .arg("--prompts")
        .arg(&prompts)
        .args(["--steps", "2", "--raters", "2", "--quiet"])
        .output()
        .unwrap();
    assert_ok(&out);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["same_noise"], true);
    assert!(m["systems"][0]["checkpoint_sha256"].as_str().unwrap().len() == 64);
    let key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(study.join("key.json")).unwrap()).unwrap();
    for item in m["items"].as_array().unwrap() {
        let [x, y] =
            [&item["images"][0], &item["images"][1]].map(|v| v.as_str().unwrap().to_string());
        assert_ne!(x, y);
        assert_ne!(key["images"][&x]["system"], key["images"][&y]["system"]);
        let px = |id: &str| {
            image::open(study.join(format!("images/{id}.png")))
                .unwrap()
                .to_rgb8()
                .into_raw()
        };
        assert_eq!(px(&x), px(&y), "same run, same noise: same pixels");
    }
    // The page names neither system, nor the run's path, nor the checkpoint's hash.
    let st = study.to_str().unwrap();
    ok(&["study", "lock", st]);
    let html = tmp.path().join("p.html");
    ok(&["study", "export-html", st, "--out", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    let sha = m["systems"][0]["checkpoint_sha256"].as_str().unwrap();
    for secret in [
        sha,
        &sha[..16],
        runp.to_str().unwrap(),
        "\"one\"",
        "\"two\"",
    ] {
        assert!(!page.contains(secret), "the page contains {secret}");
    }
}

/// Three systems, every pair (round robin): Bradley-Terry scores with cluster-bootstrap
/// intervals, the pairwise win matrix, and the order the simulated shares imply.
#[test]
fn three_systems_in_a_round_robin_get_bradley_terry_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, prompts) = folders(tmp.path(), 10);
    let c = tmp.path().join("model-third");
    std::fs::create_dir_all(&c).unwrap();
    for p in 0..10 {
        let img = image::RgbImage::from_fn(24, 24, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 5 + p) as u8, 99])
        });
        img.save(c.join(format!("p{p:04}_0.png"))).unwrap();
    }
    let study = tmp.path().join("rr");
    let s = study.to_str().unwrap();
    ok(&[
        "study",
        "new",
        s,
        "--systems",
        &format!("first=images:{}", a.display()),
        &format!("second=images:{}", b.display()),
        &format!("third=images:{}", c.display()),
        "--baseline",
        "none",
        "--prompts",
        prompts.to_str().unwrap(),
        "--raters",
        "6",
        "--quiet",
    ]);
    ok(&["study", "lock", s]);
    let sim = tmp.path().join("sim");
    // Each pair's first system wins 75 %: first > second > third.
    ok(&[
        "study",
        "simulate",
        s,
        "--share",
        "aesthetics=0.75,prompt_following=0.75",
        "--seed",
        "2",
        "--out",
        sim.to_str().unwrap(),
    ]);
    let mut args = vec!["study".to_string(), "import".into(), s.into()];
    for e in std::fs::read_dir(&sim).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().ends_with(".flowlens-ratings.json") {
            args.push(p.display().to_string());
        }
    }
    ok(&args.iter().map(|x| x.as_str()).collect::<Vec<_>>());
    ok(&["study", "unblind", s]);
    let summary: serde_json::Value = serde_json::from_str(&ok(&[
        "study", "analyze", s, "--json", "--style", "grouped",
    ]))
    .unwrap();
    assert!(
        study
            .join("analysis/figure_preference_grouped.png")
            .is_file()
    );
    assert_eq!(
        summary["pairs"].as_array().unwrap().len(),
        6,
        "3 pairs x 2 criteria"
    );
    for row in summary["bradley_terry"].as_array().unwrap() {
        let theta: Vec<f64> = row["fit"]["theta"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        assert!(theta[0] > theta[1] && theta[1] > theta[2], "{theta:?}");
        // The Davidson model orders them the same way, with a positive tie parameter.
        let dav: Vec<f64> = row["davidson"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        assert!(dav[0] > dav[1] && dav[1] > dav[2], "{dav:?}");
        assert!(row["davidson"][1].as_f64().unwrap() > 0.0);
        assert!(theta.iter().sum::<f64>().abs() < 1e-9);
        let ci = &row["fit"]["theta_ci"][0];
        assert!(
            ci["lower"].as_f64().unwrap() <= theta[0] && theta[0] <= ci["upper"].as_f64().unwrap()
        );
    }
    for f in [
        "bt.csv",
        "pairwise.csv",
        "figure_bt_aesthetics.png",
        "figure_bt_prompt_following.svg",
    ] {
        assert!(study.join("analysis").join(f).is_file(), "{f}");
    }
}
