//! Multi-node training through the binary (issue 16), two processes on 127.0.0.1: they train as
//! one process does, the second one configured through torchrun's environment; a node that
//! does not come, or a node 0 that cannot be reached, fails within the timeout naming it; a
//! node started with other settings is refused with the differing field named.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::losses;

fn flowlens_in(dir: &Path) -> Command {
    let mut c = common::flowlens_in(dir);
    for k in [
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_NNODES",
        "SLURM_NODEID",
        "SLURM_JOB_NODELIST",
    ] {
        c.env_remove(k);
    }
    c
}

const CONFIG: &str = "sample_every = 0\neval_every = 0\nstage1_steps = 4\nbatch_size = 4\n\
                      checkpoint_every = 100\n[prior]\nsteps = 12\nbatch_size = 16\n[data]\n\
                      kind = \"shapes\"\nseed = 0\nlen = 96\n";

fn args(dir: &Path, run: &Path, extra: &[&str]) -> Vec<String> {
    let config = dir.join("nodes.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut a: Vec<String> = [
        "train",
        "--preset",
        "tiny",
        "--variant",
        "both",
        "--steps",
        "8",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "--config".to_string(),
        config.display().to_string(),
        "--run".into(),
        run.display().to_string(),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(c: &mut Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn ok(out: Output, who: &str) {
    assert!(
        out.status.success(),
        "{who}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn two_nodes_train_as_one_process_does_and_stay_identical() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    ok(
        flowlens_in(dir.path())
            .args(args(dir.path(), &one, &[]))
            .output()
            .unwrap(),
        "one process",
    );
    let run = dir.path().join("two-nodes");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let node0 = spawn(flowlens_in(dir.path()).args(args(
        dir.path(),
        &run,
        &[
            "--nnodes",
            "2",
            "--node-rank",
            "0",
            "--rendezvous",
            &address,
            "--check-replicas",
            "1",
        ],
    )));
    // Node 1 as torchrun would start it: the same command, its place in the environment.
    let node1 = spawn(
        flowlens_in(dir.path())
            .args(args(dir.path(), &run, &["--check-replicas", "1"]))
            .env("WORLD_SIZE", "2")
            .env("LOCAL_WORLD_SIZE", "1")
            .env("GROUP_RANK", "1")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string()),
    );
    ok(node1.wait_with_output().unwrap(), "node 1");
    ok(node0.wait_with_output().unwrap(), "node 0");
    let (a, b) = (losses(&one), losses(&run));
    assert_eq!(a.len(), 8);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (step, la) in &a {
        let lb = b[step];
        assert!(((la - lb) / la).abs() < 1e-5, "step {step}: {la} vs {lb}");
    }
}

#[test]
fn a_node_that_does_not_come_is_named_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = flowlens_in(dir.path())
        .args(args(
            dir.path(),
            &dir.path().join("alone"),
            &[
                "--nnodes",
                "4",
                "--node-rank",
                "0",
                "--rendezvous",
                &address,
            ],
        ))
        .env("FLOWLENS_RENDEZVOUS_TIMEOUT", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node(s) 1, 2, 3 of 4 did not join within 2 s"),
        "{err}"
    );
    // The preparation (latent cache, prior) comes first; the wait itself is bounded.
    assert!(started.elapsed() < Duration::from_secs(120));
    let out = flowlens_in(dir.path())
        .args(args(
            dir.path(),
            &dir.path().join("alone"),
            &[
                "--nnodes",
                "2",
                "--node-rank",
                "1",
                "--rendezvous",
                &address,
            ],
        ))
        .env("FLOWLENS_RENDEZVOUS_TIMEOUT", "2")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "node 0 at {address} could not be reached within 2 s"
        )),
        "{err}"
    );
}

#[test]
fn a_node_started_with_other_settings_is_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("mismatch");
    let address = format!("127.0.0.1:{}", free_port());
    let node = |rank: &str, extra: &[&str]| {
        let mut a = vec![
            "--nnodes",
            "2",
            "--node-rank",
            rank,
            "--rendezvous",
            &address,
        ];
        a.extend_from_slice(extra);
        spawn(
            flowlens_in(dir.path())
                .args(args(dir.path(), &run, &a))
                .env("FLOWLENS_RENDEZVOUS_TIMEOUT", "60"),
        )
    };
    let node0 = node("0", &[]);
    let node1 = node("1", &["--lr", "0.5"]);
    for (child, who) in [(node1, "node 1"), (node0, "node 0")] {
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{who}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("node 1 was started with other settings than node 0: lr"),
            "{who}: {err}"
        );
    }
}
