//! Several nodes (processes) of one data-parallel run: where they meet (the rendezvous), and
//! the link over which the node leaders average their nodes' gradients on the CPU.
//!
//! One process per node, each with its own devices (`--devices`, the same count on every
//! node). Node 0 trains as a single-node run would (it alone writes the run folder); the others
//! follow: they connect to node 0's rendezvous address, say who they are and what they were
//! asked to train (the resolved config: a node started with other settings is refused, its
//! differing fields named), and receive where to start: the parameters node 0 initialised, or
//! the checkpoint step to load from the run folder, which every node must see (a shared file
//! system, as for any multi-node training). A node that does not join, or a node 0 that cannot
//! be reached, is an error after the timeout (`FLOWLENS_RENDEZVOUS_TIMEOUT`, seconds, default
//! 300) naming the missing node ranks, never a hang.
//!
//! The values come from `--nnodes N --node-rank R --rendezvous HOST:PORT`, else from the
//! environment that torchrun (`WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `GROUP_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`) or SLURM (`SLURM_NNODES`, `SLURM_NODEID`, `SLURM_JOB_NODELIST` with
//! `MASTER_PORT` or port 29500) set, so that `srun flowlens train ...` works.
//!
//! Wire format: each message is a little-endian u64 length and that many bytes; control
//! messages are JSON, buffers are little-endian f32. On the CPU the per-step average of the
//! node sums goes through node 0 (a star): every other leader sends its node's sum, node 0 adds
//! them in node order and sends the total back, so every node gets the same bits. On CUDA the
//! rendezvous hands out NCCL's unique id instead and NCCL averages across all GPUs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::train::config::{TrainConfig, changed_fields};
use crate::train::error::TrainError;

/// The message format of the rendezvous.
pub const FORMAT: &str = "flowlens.rendezvous.v1";

/// The environment variable bounding the rendezvous, in seconds.
pub const TIMEOUT_ENV: &str = "FLOWLENS_RENDEZVOUS_TIMEOUT";

/// The environment variable bounding each exchange, in seconds.
pub const COLLECTIVE_TIMEOUT_ENV: &str = "FLOWLENS_COLLECTIVE_TIMEOUT";

/// How long one exchange may take (`FLOWLENS_COLLECTIVE_TIMEOUT`, seconds, default 600).
pub(crate) fn exchange_timeout() -> Duration {
    let secs = std::env::var(COLLECTIVE_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0 && s.is_finite())
        .unwrap_or(600.0);
    Duration::from_secs_f64(secs)
}

/// The rendezvous port when only the host is known (torchrun's default).
pub const DEFAULT_PORT: u16 = 29500;

fn rendezvous_timeout() -> Duration {
    let secs = std::env::var(TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0 && s.is_finite())
        .unwrap_or(300.0);
    Duration::from_secs_f64(secs)
}

fn err(text: impl Into<String>) -> TrainError {
    TrainError::Parallel(text.into())
}

/// Which node of how many, and where node 0 listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub nnodes: usize,
    pub node_rank: usize,
    /// `HOST:PORT` of node 0.
    pub rendezvous: String,
}

impl NodeSpec {
    /// From the flags, each falling back to the environment of torchrun or SLURM; `None` for
    /// a single-node run.
    pub fn resolve(
        nnodes: Option<usize>,
        node_rank: Option<usize>,
        rendezvous: Option<&str>,
    ) -> Result<Option<Self>, TrainError> {
        Self::resolve_with(nnodes, node_rank, rendezvous, &|k| std::env::var(k).ok())
    }

    /// [`NodeSpec::resolve`] with the environment given (tests).
    pub fn resolve_with(
        nnodes: Option<usize>,
        node_rank: Option<usize>,
        rendezvous: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TrainError> {
        let num = |k: &str| -> Result<Option<usize>, TrainError> {
            match env(k) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    err(format!(
                        "the environment variable {k}=`{v}` is not a number"
                    ))
                }),
            }
        };
        // torchrun: one process per node means WORLD_SIZE / LOCAL_WORLD_SIZE nodes.
        let torch_nodes = match (num("WORLD_SIZE")?, num("LOCAL_WORLD_SIZE")?) {
            (Some(w), Some(l)) if l > 0 => Some(w / l),
            (Some(w), None) => Some(w),
            _ => None,
        };
        let nnodes = nnodes.or(torch_nodes).or(num("SLURM_NNODES")?).unwrap_or(1);
        if nnodes <= 1 {
            return Ok(None);
        }
        let node_rank = match node_rank {
            Some(r) => r,
            None => num("GROUP_RANK")?.or(num("SLURM_NODEID")?).ok_or_else(|| {
                err(format!(
                    "{nnodes} nodes but no node rank: give --node-rank (or run under torchrun \
                         or srun, which set GROUP_RANK or SLURM_NODEID)"
                ))
            })?,
        };
        if node_rank >= nnodes {
            return Err(err(format!(
                "--node-rank {node_rank} is not below --nnodes {nnodes}"
            )));
        }
        let port = num("MASTER_PORT")?
            .map(|p| p as u16)
            .unwrap_or(DEFAULT_PORT);
        let rendezvous = match rendezvous {
            Some(r) => r.to_string(),
            None => match env("MASTER_ADDR") {
                Some(host) => format!("{host}:{port}"),
                None => match env("SLURM_JOB_NODELIST").and_then(|l| first_host(&l)) {
                    Some(host) => format!("{host}:{port}"),
                    None => {
                        return Err(err(
                            "no rendezvous address: give --rendezvous HOST:PORT (node 0's \
                             address), or set MASTER_ADDR and MASTER_PORT",
                        ));
                    }
                },
            },
        };
        Ok(Some(Self {
            nnodes,
            node_rank,
            rendezvous,
        }))
    }

    fn address(&self) -> Result<SocketAddr, TrainError> {
        self.rendezvous
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                err(format!(
                    "--rendezvous `{}` is not a HOST:PORT address that resolves",
                    self.rendezvous
                ))
            })
    }
}

/// The first host of a SLURM node list (`gpu[01-04,07],cpu3` -> `gpu01`).
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    let end = list.find([',', '[']).unwrap_or(list.len());
    let prefix = &list[..end];
    if list[end..].starts_with('[') {
        let inner = &list[end + 1..list[end..].find(']').map(|i| end + i)?];
        let first = inner.split([',', '-']).next()?;
        Some(format!("{prefix}{first}"))
    } else if prefix.is_empty() {
        None
    } else {
        Some(prefix.to_string())
    }
}

fn write_msg(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u64).to_le_bytes())?;
    s.write_all(bytes)?;
    s.flush()
}

fn read_msg(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > 1 << 36 {
        return Err(std::io::Error::other(format!("a message of {len} bytes")));
    }
    let mut buf = vec![0u8; len as usize];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What a node says when it joins.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Hello {
    format: String,
    node_rank: usize,
    nnodes: usize,
    devices: usize,
    config: TrainConfig,
}

/// What node 0 answers every node once all have joined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    /// Set when the run cannot start (every node reports it).
    pub error: Option<String>,
    /// Devices per node.
    pub devices: usize,
    /// The step training starts from: 0 with node 0's parameters sent next, else the
    /// checkpoint of that step in the run folder.
    pub start_step: usize,
    /// Checksum of node 0's parameters at the start ([`crate::train::parallel::param_checksum`]).
    pub checksum: u64,
    /// NCCL's unique id (CUDA runs), 128 bytes.
    pub nccl_id: Option<Vec<u8>>,
}

/// A node leader's connection to the others: node 0 holds one stream per other node (in node
/// order), the others one to node 0.
pub struct NodeLink {
    pub node_rank: usize,
    pub nnodes: usize,
    streams: Vec<TcpStream>,
}

impl NodeLink {
    fn io(&self, what: &str) -> impl Fn(std::io::Error) -> TrainError + '_ {
        let what = what.to_string();
        move |e| {
            err(format!(
                "node {}: {what}: {e} (another node failed, stopped or did not answer within \
                 the timeout)",
                self.node_rank
            ))
        }
    }

    /// The sum over the nodes of each node's `local` sum, added in node order on node 0: the
    /// same bits on every node.
    pub fn sum(&mut self, local: Vec<f32>) -> Result<Vec<f32>, TrainError> {
        if self.node_rank == 0 {
            let mut total = local;
            for i in 0..self.streams.len() {
                let bytes = read_msg(&mut self.streams[i])
                    .map_err(self.io("receiving a node's gradients"))?;
                let theirs = f32s(&bytes);
                if theirs.len() != total.len() {
                    return Err(err(format!(
                        "node {} sent {} gradient values, node 0 has {}: the nodes run different models",
                        i + 1,
                        theirs.len(),
                        total.len()
                    )));
                }
                for (t, x) in total.iter_mut().zip(theirs) {
                    *t += x;
                }
            }
            let bytes = f32_bytes(&total);
            for i in 0..self.streams.len() {
                write_msg(&mut self.streams[i], &bytes).map_err(self.io("sending the total"))?;
            }
            Ok(total)
        } else {
            let n = local.len();
            write_msg(&mut self.streams[0], &f32_bytes(&local))
                .map_err(self.io("sending gradients to node 0"))?;
            let bytes = read_msg(&mut self.streams[0]).map_err(self.io("receiving the total"))?;
            if bytes.len() != 4 * n {
                return Err(err(format!(
                    "node {}: node 0 answered {} bytes for {n} gradient values: it stopped (its \
                     own output says why)",
                    self.node_rank,
                    bytes.len()
                )));
            }
            Ok(f32s(&bytes))
        }
    }

    /// Node 0 sends `values` to every other node; the others receive them.
    pub fn broadcast(&mut self, values: Option<&[f32]>) -> Result<Vec<f32>, TrainError> {
        if self.node_rank == 0 {
            let values = values.unwrap_or_default();
            let bytes = f32_bytes(values);
            for i in 0..self.streams.len() {
                write_msg(&mut self.streams[i], &bytes).map_err(self.io("sending parameters"))?;
            }
            Ok(values.to_vec())
        } else {
            let bytes = read_msg(&mut self.streams[0]).map_err(self.io("receiving parameters"))?;
            Ok(f32s(&bytes))
        }
    }

    /// Node 0 learns every node's checksum after a step and checks it against its own.
    pub fn check(&mut self, checksum: u64, step: usize) -> Result<(), TrainError> {
        if self.node_rank == 0 {
            for i in 0..self.streams.len() {
                let b = read_msg(&mut self.streams[i]).map_err(self.io("receiving a checksum"))?;
                let theirs = u64::from_le_bytes(
                    b.get(..8)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or_default(),
                );
                if theirs != checksum {
                    return Err(err(format!(
                        "the replica of node {} differs from node 0's after step {step} \
                         (checksums {theirs:016x} and {checksum:016x})",
                        i + 1
                    )));
                }
            }
            Ok(())
        } else {
            write_msg(&mut self.streams[0], &checksum.to_le_bytes())
                .map_err(self.io("sending a checksum"))
        }
    }

    /// Node 0 tells every other node to run `step` (`None`: training is over).
    pub fn go(&mut self, step: Option<usize>) -> Result<(), TrainError> {
        let msg = serde_json::to_vec(&serde_json::json!({ "step": step })).unwrap_or_default();
        for i in 0..self.streams.len() {
            write_msg(&mut self.streams[i], &msg).map_err(self.io("starting a step"))?;
        }
        Ok(())
    }

    /// Another node waits (as long as node 0 evaluates or writes checkpoints, unbounded) for
    /// the next step to run; `None` when training is over. Node 0 stopping is an error.
    pub fn wait_go(&mut self) -> Result<Option<usize>, TrainError> {
        let stream = &mut self.streams[0];
        let _ = stream.set_read_timeout(None);
        let got = read_msg(stream);
        let _ = stream.set_read_timeout(Some(exchange_timeout()));
        let bytes = got.map_err(|e| {
            err(format!(
                "node {}: node 0 stopped ({e}); its own output says why",
                self.node_rank
            ))
        })?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("node 0 sent {e}")))?;
        Ok(v["step"].as_u64().map(|s| s as usize))
    }

    fn set_timeouts(&self, limit: Duration) {
        for s in &self.streams {
            let _ = s.set_read_timeout(Some(limit));
            let _ = s.set_write_timeout(Some(limit));
            let _ = s.set_nodelay(true);
        }
    }
}

/// Node 0's side: listens, waits for every other node, checks that they were started with
/// the same settings and devices, and answers all of them with `welcome`. `welcome.error`
/// is filled in (and returned as the error) when a node does not fit.
pub fn host(
    spec: &NodeSpec,
    config: &TrainConfig,
    devices: usize,
    mut welcome: Welcome,
) -> Result<NodeLink, TrainError> {
    let address = spec.address()?;
    let listener = TcpListener::bind(address).map_err(|e| {
        err(format!(
            "node 0 cannot listen on {} ({e}): is the port in use, or the address not this machine's?",
            spec.rendezvous
        ))
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| err(format!("rendezvous socket: {e}")))?;
    let limit = rendezvous_timeout();
    let deadline = Instant::now() + limit;
    let mut joined: Vec<Option<(TcpStream, Hello)>> = (1..spec.nnodes).map(|_| None).collect();
    let mut problems = Vec::new();
    while joined.iter().any(|j| j.is_none()) {
        if Instant::now() > deadline {
            let missing: Vec<String> = joined
                .iter()
                .enumerate()
                .filter(|(_, j)| j.is_none())
                .map(|(i, _)| (i + 1).to_string())
                .collect();
            return Err(err(format!(
                "rendezvous at {}: node(s) {} of {} did not join within {:.0} s (set {TIMEOUT_ENV} \
                 for a longer wait; were they started with --nnodes {} and --rendezvous {}?)",
                spec.rendezvous,
                missing.join(", "),
                spec.nnodes,
                limit.as_secs_f64(),
                spec.nnodes,
                spec.rendezvous
            )));
        }
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                let hello = read_msg(&mut stream)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Hello>(&b).ok());
                let Some(hello) = hello else {
                    problems.push(format!("{peer} sent no flowlens hello"));
                    continue;
                };
                let r = hello.node_rank;
                if hello.format != FORMAT || r == 0 || r >= spec.nnodes || joined[r - 1].is_some() {
                    problems.push(format!(
                        "{peer} says it is node {r} of {} ({}); refused",
                        hello.nnodes, hello.format
                    ));
                    let answer = Welcome {
                        error: Some(format!(
                            "node 0 refused node {r}: expected node ranks 1..{} once each, format {FORMAT}",
                            spec.nnodes
                        )),
                        ..welcome.clone()
                    };
                    let _ = write_msg(
                        &mut stream,
                        &serde_json::to_vec(&answer).unwrap_or_default(),
                    );
                    continue;
                }
                joined[r - 1] = Some((stream, hello));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(err(format!("rendezvous at {}: {e}", spec.rendezvous))),
        }
    }
    let joined: Vec<(TcpStream, Hello)> = joined.into_iter().flatten().collect();
    for (_, hello) in &joined {
        let r = hello.node_rank;
        if hello.nnodes != spec.nnodes {
            problems.push(format!(
                "node {r} was started with --nnodes {}, node 0 with {}",
                hello.nnodes, spec.nnodes
            ));
        }
        if hello.devices != devices {
            problems.push(format!(
                "node {r} has {} device(s), node 0 has {devices}: every node needs the same count",
                hello.devices
            ));
        }
        let changed = changed_fields(config, &hello.config);
        if !changed.is_empty() {
            problems.push(format!(
                "node {r} was started with other settings than node 0: {}",
                changed.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        welcome.error = Some(problems.join("; "));
    }
    let bytes = serde_json::to_vec(&welcome).map_err(|e| err(e.to_string()))?;
    let mut streams = Vec::new();
    for (mut stream, _) in joined {
        write_msg(&mut stream, &bytes).map_err(|e| err(format!("rendezvous: {e}")))?;
        streams.push(stream);
    }
    if let Some(e) = welcome.error {
        return Err(err(format!("rendezvous at {}: {e}", spec.rendezvous)));
    }
    let link = NodeLink {
        node_rank: 0,
        nnodes: spec.nnodes,
        streams,
    };
    link.set_timeouts(exchange_timeout());
    Ok(link)
}

/// Another node's side: connects to node 0 (retrying until the timeout: node 0 may still be
/// preparing), says who it is, and waits for the welcome.
pub fn join(
    spec: &NodeSpec,
    config: &TrainConfig,
    devices: usize,
) -> Result<(NodeLink, Welcome), TrainError> {
    let address = spec.address()?;
    let limit = rendezvous_timeout();
    let deadline = Instant::now() + limit;
    let mut stream = loop {
        match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
            Ok(s) => break s,
            Err(e) if Instant::now() > deadline => {
                return Err(err(format!(
                    "node {}: node 0 at {} could not be reached within {:.0} s ({e}); is it \
                     running with --rendezvous {}? (set {TIMEOUT_ENV} for a longer wait)",
                    spec.node_rank,
                    spec.rendezvous,
                    limit.as_secs_f64(),
                    spec.rendezvous
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let hello = Hello {
        format: FORMAT.into(),
        node_rank: spec.node_rank,
        nnodes: spec.nnodes,
        devices,
        config: config.clone(),
    };
    write_msg(
        &mut stream,
        &serde_json::to_vec(&hello).map_err(|e| err(e.to_string()))?,
    )
    .map_err(|e| err(format!("node {}: rendezvous: {e}", spec.node_rank)))?;
    // Node 0 answers once every node has joined.
    let _ = stream.set_read_timeout(Some(limit));
    let welcome: Welcome = read_msg(&mut stream)
        .map_err(|e| {
            err(format!(
                "node {}: no answer from node 0 at {} ({e}): another node did not join, or \
                 node 0 stopped",
                spec.node_rank, spec.rendezvous
            ))
        })
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| err(format!("node 0's answer: {e}")))
        })?;
    if let Some(e) = &welcome.error {
        return Err(err(format!("rendezvous at {}: {e}", spec.rendezvous)));
    }
    let link = NodeLink {
        node_rank: spec.node_rank,
        nnodes: spec.nnodes,
        streams: vec![stream],
    };
    link.set_timeouts(exchange_timeout());
    Ok((link, welcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn node_settings_come_from_flags_then_torchrun_then_slurm() {
        let none = env(&[]);
        assert_eq!(
            NodeSpec::resolve_with(None, None, None, &none).unwrap(),
            None
        );
        let flags = NodeSpec::resolve_with(Some(2), Some(1), Some("10.0.0.1:2222"), &none)
            .unwrap()
            .unwrap();
        assert_eq!((flags.nnodes, flags.node_rank), (2, 1));
        let torch = env(&[
            ("WORLD_SIZE", "4"),
            ("LOCAL_WORLD_SIZE", "1"),
            ("GROUP_RANK", "3"),
            ("MASTER_ADDR", "host0"),
            ("MASTER_PORT", "1234"),
        ]);
        let t = NodeSpec::resolve_with(None, None, None, &torch)
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.nnodes, t.node_rank, t.rendezvous.as_str()),
            (4, 3, "host0:1234")
        );
        let slurm = env(&[
            ("SLURM_NNODES", "2"),
            ("SLURM_NODEID", "1"),
            ("SLURM_JOB_NODELIST", "gpu-a[017-018]"),
        ]);
        let s = NodeSpec::resolve_with(None, None, None, &slurm)
            .unwrap()
            .unwrap();
        assert_eq!((s.nnodes, s.node_rank), (2, 1));
        assert_eq!(s.rendezvous, format!("gpu-a017:{DEFAULT_PORT}"));
        // Flags win over the environment.
        let f = NodeSpec::resolve_with(Some(2), Some(0), None, &slurm)
            .unwrap()
            .unwrap();
        assert_eq!(f.node_rank, 0);
        // What is missing or wrong is named.
        let e = NodeSpec::resolve_with(Some(2), None, Some("h:1"), &none).unwrap_err();
        assert!(e.to_string().contains("--node-rank"), "{e}");
        let e = NodeSpec::resolve_with(Some(2), Some(2), Some("h:1"), &none).unwrap_err();
        assert!(e.to_string().contains("not below"), "{e}");
        let e = NodeSpec::resolve_with(Some(2), Some(1), None, &none).unwrap_err();
        assert!(e.to_string().contains("--rendezvous"), "{e}");
    }

    #[test]
    fn the_first_host_of_a_slurm_node_list() {
        assert_eq!(first_host("gpu[01-04,07],cpu3").as_deref(), Some("gpu01"));
        assert_eq!(first_host("node7").as_deref(), Some("node7"));
        assert_eq!(first_host("a1,b2").as_deref(), Some("a1"));
        assert_eq!(first_host("").as_deref(), None);
    }
}
