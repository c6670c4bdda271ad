//! The Study tab's rate mode driven headless (issue 17, STUDY.md 5.9 test 8): the prompt and
//! two images shown, keys record choices, undo re-asks, a restart resumes where the rater
//! stopped, no system name on screen while blind, the analysis locked until unblinding.

use std::path::Path;
use std::time::Duration;

use eframe::egui;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use flowlens_app::LabApp;
use flowlens_app::app::Tab;
use flowlens_core::device::DeviceSpec;
use flowlens_experiments::study::design::{StudyToml, SystemSpec};
use flowlens_experiments::study::generate::{self, Secret};
use flowlens_experiments::study::lock;

/// A locked two-system study of image folders under `<root>/studies/s`; returns a rater code.
fn study(root: &Path) -> String {
    let mut systems = Vec::new();
    for (k, name) in ["qxours", "qxbase"].iter().enumerate() {
        let dir = root.join(format!("images-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        for p in 0..4u32 {
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                image::Rgb([(x * 9 + p * 40) as u8, (y * 9) as u8, (k * 200) as u8])
            });
            img.save(dir.join(format!("p{p:04}_0.png"))).unwrap();
        }
        systems.push(SystemSpec {
            name: name.to_string(),
            run: None,
            checkpoint: "latest".into(),
            weights: "ema".into(),
            images: Some(dir.display().to_string()),
        });
    }
    let prompts = root.join("prompts.txt");
    std::fs::write(
        &prompts,
        "a red kite\na blue boat\na green tree\na yellow house\n",
    )
    .unwrap();
    let mut spec = StudyToml::new("lab-study", systems, &prompts.display().to_string(), 2);
    spec.protocol.min_view_ms = 0;
    let dir = root.join("studies/s");
    let m = generate::create(&dir, &spec, root, DeviceSpec::Cpu, Secret::FromSeed, false).unwrap();
    lock::lock(&dir).unwrap();
    m.raters[0].code.clone()
}

fn harness(app: LabApp) -> Harness<'static, LabApp> {
    Harness::builder()
        .with_size([1300.0, 860.0])
        .with_step_dt(0.05)
        .with_max_steps(400)
        .build_ui_state(|ui, app: &mut LabApp| app.ui(ui), app)
}

fn settle(h: &mut Harness<'static, LabApp>) {
    for _ in 0..6 {
        h.step();
        let ctx = h.ctx.clone();
        assert!(h.state_mut().settle(&ctx, Duration::from_secs(30)));
    }
    h.step();
}

fn session_lines(h: &Harness<'static, LabApp>, root: &Path) -> usize {
    h.state().study.flush();
    std::fs::read_dir(root.join("studies/s/ratings"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count() - 1)
                .sum()
        })
        .unwrap_or(0)
}

fn open_rating(root: &Path, code: &str) -> Harness<'static, LabApp> {
    let mut app = LabApp::new(root.to_path_buf());
    app.show_frame_time = false;
    app.tab = Tab::Study;
    let mut h = harness(app);
    settle(&mut h);
    h.state_mut().study.code = code.to_lowercase();
    h.get_by_label("Rate").click();
    settle(&mut h);
    h
}

#[test]
fn the_rate_mode_records_undoes_and_resumes_without_naming_a_system() {
    let tmp = tempfile::tempdir().unwrap();
    let code = study(tmp.path());
    let mut h = open_rating(tmp.path(), &code);
    // While blind, nothing names a system, a folder or the key.
    for secret in ["qxours", "qxbase", "images-q", "key.json"] {
        assert!(
            h.query_by_label_contains(secret).is_none(),
            "{secret} on screen"
        );
    }
    h.get_by_label("Left image");
    h.get_by_label("Right image");
    let first = h.state().study.rate.as_ref().unwrap().current;
    assert_eq!(first, Some(0));
    let screen = h.state().study.rate.as_ref().unwrap().view.screens[0].clone();
    h.get_by_label(&screen.question);
    if let Some(p) = &screen.prompt {
        h.get_by_label_contains(p);
    }
    // Key 1 answers "left", then the next screen is shown.
    h.key_press(egui::Key::Num1);
    settle(&mut h);
    {
        let mode = h.state().study.rate.as_ref().unwrap();
        assert_eq!(mode.current, Some(1));
        assert_eq!(mode.view.answers[&0].choice, "left");
    }
    assert_eq!(session_lines(&h, tmp.path()), 1);
    // U re-asks screen 0; key 2 answers it again; both answers stay in the session file.
    h.key_press(egui::Key::U);
    settle(&mut h);
    assert_eq!(h.state().study.rate.as_ref().unwrap().current, Some(0));
    h.key_press(egui::Key::Num2);
    settle(&mut h);
    {
        let mode = h.state().study.rate.as_ref().unwrap();
        assert_eq!(mode.view.answers[&0].choice, "right");
        assert_eq!(mode.current, Some(1));
    }
    h.key_press(egui::Key::Num3);
    settle(&mut h);
    assert_eq!(session_lines(&h, tmp.path()), 3);
    h.get_by_label("Pause").click();
    settle(&mut h);
    // Blind: the analysis is locked.
    h.get_by_label_contains("stays locked until the study is unblinded");
    drop(h);
    // A restart resumes at the first unanswered screen with the answers kept.
    let h = open_rating(tmp.path(), &code);
    {
        let mode = h.state().study.rate.as_ref().unwrap();
        assert_eq!(mode.view.answers.len(), 2);
        assert_eq!(mode.view.answers[&0].choice, "right");
        assert_eq!(mode.view.answers[&1].choice, "tie");
        assert_eq!(mode.current, Some(2));
    }
    drop(h);
    unblind_and_analyze(tmp.path());
}

/// Simulated raters for the rest, then Unblind (with its confirmation) and the analysis view.
fn unblind_and_analyze(root: &Path) {
    use flowlens_experiments::study::{ratings, simulate};
    let dir = root.join("studies/s");
    let sim = simulate::simulate(
        &dir,
        &simulate::SimulationSpec {
            share: [("prompt_following".to_string(), 0.8)].into(),
            sd_prompt: 0.5,
            sd_rater: 0.2,
            left_bias: 0.0,
            tie: 0.1,
            bad_raters: 0,
            seed: 2,
        },
        &root.join("sim"),
    )
    .unwrap();
    ratings::import(&dir, &sim.files[1..]).unwrap();
    let mut app = LabApp::new(root.to_path_buf());
    app.show_frame_time = false;
    app.tab = Tab::Study;
    let mut h = harness(app);
    settle(&mut h);
    assert!(h.query_by_label("Unblind").is_some());
    h.get_by_label_contains("Collection is finished").click();
    settle(&mut h);
    h.get_by_label("Unblind").click();
    settle(&mut h);
    h.get_by_label("primary p");
    assert_eq!(
        h.get_all_by_label("qxours vs qxbase").count(),
        2,
        "one row per criterion"
    );
    assert!(dir.join("unblinded.json").is_file());
    assert!(dir.join("analysis/figure_preference.png").is_file());
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(audit.contains("unblind"), "{audit}");
}

#[test]
fn an_unknown_rater_code_is_refused_on_screen() {
    let tmp = tempfile::tempdir().unwrap();
    study(tmp.path());
    let h = open_rating(tmp.path(), "ZZZZZ");
    assert!(h.state().study.rate.is_none());
    h.get_by_label_contains("is not a rater code of this study");
}
