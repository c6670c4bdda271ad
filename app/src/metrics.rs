//! Tailing a run's `metrics.jsonl` while its writer appends to it: each refresh reads only the
//! bytes added since the last one, keeps an unfinished last line for the next refresh (a writer
//! mid-line, or killed mid-line), and keeps the **last** record of each step (a resumed run logs
//! the steps after its checkpoint again; docs/RUN_FORMAT.md).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flowlens_core::run::{MetricRecord, StepRecord};
use serde_json::Value;

/// One oracle / benchmark evaluation (`event: eval`).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRecord {
    /// `eval` (shapes oracle) or `eval_mjhq` (FID / CLIP score).
    pub event: String,
    pub step: u64,
    /// `adherence.overall` (shapes oracle), or any numeric field the evaluation wrote.
    pub values: BTreeMap<String, f64>,
}

/// Everything read so far from one `metrics.jsonl`.
#[derive(Debug, Clone, Default)]
pub struct MetricsTail {
    pub path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
    pub steps: BTreeMap<u64, StepRecord>,
    pub evals: Vec<EvalRecord>,
    /// Other event records (`data`, `prior`, `resume`, `samples`), in file order.
    pub events: Vec<Value>,
    /// Lines that were complete but not JSON (a corrupted file), counted, never fatal.
    pub bad_lines: usize,
}

impl MetricsTail {
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            ..Default::default()
        }
    }

    /// Reads what was appended since the last call; `Ok(true)` when anything new arrived. A file
    /// that shrank (rewritten) is read again from the start.
    pub fn refresh(&mut self) -> std::io::Result<bool> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            *self = Self::new(&self.path);
        }
        if len == self.offset {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity((len - self.offset) as usize);
        file.take(len - self.offset).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.pending.extend_from_slice(&buf);
        let Some(last_newline) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(false);
        };
        let complete: Vec<u8> = self.pending.drain(..=last_newline).collect();
        for line in complete.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Value>(line) {
                Ok(v) => self.add(v),
                Err(_) => self.bad_lines += 1,
            }
        }
        Ok(true)
    }

    fn add(&mut self, v: Value) {
        match v.get("event").and_then(Value::as_str) {
            None => {
                if let MetricRecord::Step(r) = MetricRecord::from_value(v) {
                    self.steps.insert(r.step as u64, r);
                }
            }
            // The shapes oracle (`eval`) and the MJHQ benchmark (`eval_mjhq`, fields prefixed
            // `mjhq.`) both evaluate checkpoints; a resumed run's repeat replaces the first.
            Some(event @ ("eval" | "eval_mjhq")) => {
                let step = v.get("step").and_then(Value::as_u64).unwrap_or(0);
                let prefix = if event == "eval_mjhq" { "mjhq." } else { "" };
                let mut values = BTreeMap::new();
                crate::catalog::walk_leaves(&v, &mut |k, x| {
                    if let Some(x) = x.as_f64()
                        && !matches!(k, "step" | "seconds" | "n")
                    {
                        values.insert(format!("{prefix}{k}"), x);
                    }
                });
                let event = event.to_string();
                self.evals.retain(|e| !(e.step == step && e.event == event));
                self.evals.push(EvalRecord {
                    event,
                    step,
                    values,
                });
            }
            Some(_) => self.events.push(v),
        }
    }

    /// `(step, value)` of a step field, for plotting.
    pub fn series(&self, field: fn(&StepRecord) -> f64) -> Vec<[f64; 2]> {
        self.steps
            .iter()
            .map(|(&s, r)| [s as f64, field(r)])
            .filter(|p| p[1].is_finite())
            .collect()
    }

    /// `(step, value)` of an evaluation field (`adherence.overall`).
    pub fn eval_series(&self, key: &str) -> Vec<[f64; 2]> {
        self.evals
            .iter()
            .filter_map(|e| e.values.get(key).map(|v| [e.step as f64, *v]))
            .collect()
    }

    /// The evaluation fields present, sorted.
    pub fn eval_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .evals
            .iter()
            .flat_map(|e| e.values.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Exponential moving average smoothing as TensorBoard does it (debiased, so the first points
/// are not pulled towards 0); `weight` in [0, 1).
pub fn smooth(points: &[[f64; 2]], weight: f64) -> Vec<[f64; 2]> {
    let mut last = 0.0;
    let mut debias = 0.0;
    points
        .iter()
        .map(|p| {
            last = last * weight + (1.0 - weight) * p[1];
            debias = debias * weight + (1.0 - weight);
            [p[0], last / debias]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_tail_reads_appended_lines_once_and_waits_for_unfinished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(
            f,
            r#"{{"step":1,"loss":1.0,"lr":0.1,"grad_norm":2,"samples_per_s":5,"stage":1}}"#
        )
        .unwrap();
        write!(f, r#"{{"step":2,"loss":0.9"#).unwrap();
        f.flush().unwrap();
        let mut tail = MetricsTail::new(&path);
        assert!(tail.refresh().unwrap());
        assert_eq!(tail.steps.len(), 1);
        writeln!(
            f,
            r#","lr":0.1,"grad_norm":2,"samples_per_s":5,"stage":1}}"#
        )
        .unwrap();
        writeln!(f, r#"{{"event":"resume","from_step":1}}"#).unwrap();
        writeln!(
            f,
            r#"{{"step":2,"loss":0.5,"lr":0.1,"grad_norm":2,"samples_per_s":5,"stage":2}}"#
        )
        .unwrap();
        writeln!(
            f,
            r#"{{"event":"eval","step":2,"adherence":{{"overall":0.25,"colour":0.5}},"seconds":3}}"#
        )
        .unwrap();
        writeln!(
            f,
            r#"{{"event":"eval_mjhq","step":2,"n":30,"fid":11.5,"clip_score":24.1}}"#
        )
        .unwrap();
        writeln!(f, "not json").unwrap();
        f.flush().unwrap();
        assert!(tail.refresh().unwrap());
        assert!(!tail.refresh().unwrap());
        assert_eq!(tail.steps.len(), 2);
        assert_eq!(tail.steps[&2].loss, 0.5, "the last record of a step wins");
        assert_eq!(tail.eval_series("adherence.overall"), vec![[2.0, 0.25]]);
        assert_eq!(tail.eval_series("mjhq.fid"), vec![[2.0, 11.5]]);
        assert!(!tail.eval_keys().contains(&"mjhq.n".to_string()));
        assert_eq!(tail.events.len(), 1);
        assert_eq!(tail.bad_lines, 1);
    }

    #[test]
    fn smoothing_a_constant_keeps_it_and_weight_zero_is_the_identity() {
        let pts = vec![[0.0, 2.0], [1.0, 2.0], [2.0, 2.0]];
        for p in smooth(&pts, 0.9) {
            assert!((p[1] - 2.0).abs() < 1e-12);
        }
        let noisy = vec![[0.0, 1.0], [1.0, 3.0]];
        assert_eq!(smooth(&noisy, 0.0), noisy);
    }
}
