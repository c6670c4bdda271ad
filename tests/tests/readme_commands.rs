//! The README's two commands stay true: the main job runs end to end on the embedded default,
//! and `.ci/run` runs exactly the README's test command.

use clap::Parser;
use flowlens_experiments::cli::{Cli, Command};
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
fn readme_main_command_is_the_demo() {
    let main = readme_command("main-command");
    let args = main
        .strip_prefix("cargo run --release -- ")
        .expect("the main command runs the flowlens binary through cargo");
    let mut argv: Vec<String> = std::iter::once("flowlens".to_string())
        .chain(args.split_whitespace().map(String::from))
        .collect();
    let cli = Cli::try_parse_from(&argv).unwrap();
    assert!(
        matches!(cli.command, Command::Demo(ref d) if !d.quick),
        "the README's main command is the full demo"
    );
    // It runs end to end: experiments/tests/demo_cli.rs runs the same command with `--quick`
    // through the binary and checks every file it writes.
    argv.push("--quick".into());
    let quick = Cli::try_parse_from(&argv).unwrap();
    assert!(matches!(quick.command, Command::Demo(ref d) if d.quick));
}
