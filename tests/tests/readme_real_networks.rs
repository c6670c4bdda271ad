//! The README's commands for the real-scale networks and the MJHQ evaluation parse with the
//! `flowlens` command line as written (continuation lines joined).

use clap::Parser;
use flowlens_experiments::cli::{Cli, Command};
use flowlens_tests::repo_root;

#[test]
fn readme_vae_and_eval_commands_parse() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let at = readme
        .find("## Real-scale networks and the MJHQ-30k evaluation")
        .expect("the README section");
    let block: Vec<&str> = readme[at..]
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    let joined = block.join("\n").replace("\\\n", " ");
    let commands: Vec<&str> = joined
        .lines()
        .map(|l| l.split(" # ").next().unwrap().trim())
        .filter(|l| l.starts_with("flowlens "))
        .collect();
    assert!(commands.len() >= 4, "{commands:?}");
    let (mut vae, mut eval) = (0, 0);
    for c in commands {
        let cli = Cli::try_parse_from(c.split_whitespace())
            .unwrap_or_else(|e| panic!("README command `{c}` does not parse: {e}"));
        match cli.command {
            Command::Vae(_) => vae += 1,
            Command::Eval(_) => eval += 1,
            _ => panic!("unexpected command {c}"),
        }
    }
    assert!(vae >= 3 && eval == 1, "{vae} {eval}");
}
