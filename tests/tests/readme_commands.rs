//! The README's two commands stay true: the main job runs end to end on the embedded default,
//! and `.ci/run` runs exactly the README's test command.

use clap::Parser;
use flowlens_experiments::cli::Cli;
use flowlens_tests::repo_root;

/// The first line of the fenced block after `<!-- marker -->`.
fn readme_command(marker: &str) -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let at = readme
        .find(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("README has no `<!-- {marker} -->`"));
    readme[at..]
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .nth(1)
        .expect("a command line in the block")
        .trim()
        .to_string()
}

#[test]
fn ci_runs_the_readme_test_command() {
    let test_command = readme_command("test-command");
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == test_command),
        ".ci/run must run `{test_command}` verbatim"
    );
}

#[test]
fn readme_main_command_runs_end_to_end() {
    let main = readme_command("main-command");
    let args = main
        .strip_prefix("cargo run --release -- ")
        .expect("the main command runs the flowlens binary through cargo");
    let out = tempfile::tempdir().unwrap();
    // Same arguments, run from the repository root, with the output redirected to a temp dir.
    let mut argv: Vec<String> = vec!["flowlens".into()];
    let mut words = args.split_whitespace().peekable();
    while let Some(w) = words.next() {
        argv.push(w.into());
        if w == "--out" {
            words.next();
            argv.push(out.path().join("run").display().to_string());
        } else if matches!(w, "--model" | "--prompts") {
            let value = words.next().unwrap();
            let path = repo_root().join(value);
            assert!(path.exists(), "README names {value}, which does not exist");
            argv.push(path.display().to_string());
        }
    }
    argv.push("--quiet".into());
    Cli::try_parse_from(&argv).unwrap().run().unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("run/meta.json")).unwrap())
            .unwrap();
    let n = meta["n"].as_u64().unwrap();
    assert!(n > 0);
    for file in meta["layer_files"].as_array().unwrap() {
        let arr =
            flowlens_core::npy::NpyArray::read(out.path().join("run").join(file.as_str().unwrap()))
                .unwrap();
        assert_eq!(arr.shape[0] as u64, n);
        assert!(arr.as_f32().iter().all(|v| v.is_finite()));
    }
}
