//! The worker threads: every file read and every computation the UI asks for runs here, never on
//! the UI thread. The UI submits a closure with a key, polls finished results once per frame, and
//! is woken (`request_repaint`) when one lands.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Job<T> = Box<dyn FnOnce() -> T + Send>;

/// A small pool of worker threads producing `T`s.
pub struct Worker<T: Send + 'static> {
    jobs: Sender<(String, Job<T>)>,
    results: Receiver<(String, T)>,
    in_flight: HashSet<String>,
    pending: Arc<AtomicUsize>,
    repaint: Arc<Mutex<Option<eframe::egui::Context>>>,
}

impl<T: Send + 'static> Worker<T> {
    pub fn new(threads: usize) -> Self {
        let (jobs, job_rx) = channel::<(String, Job<T>)>();
        let (result_tx, results) = channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let repaint: Arc<Mutex<Option<eframe::egui::Context>>> = Arc::new(Mutex::new(None));
        for i in 0..threads.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let result_tx = result_tx.clone();
            let pending = Arc::clone(&pending);
            let repaint = Arc::clone(&repaint);
            std::thread::Builder::new()
                .name(format!("flowlens-lab-worker-{i}"))
                .spawn(move || {
                    loop {
                        let next = job_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((key, job))) = next else { break };
                        let out = job();
                        pending.fetch_sub(1, Ordering::SeqCst);
                        if result_tx.send((key, out)).is_err() {
                            break;
                        }
                        if let Ok(ctx) = repaint.lock()
                            && let Some(ctx) = ctx.as_ref()
                        {
                            ctx.request_repaint();
                        }
                    }
                })
                .expect("spawning a worker thread");
        }
        Self {
            jobs,
            results,
            in_flight: HashSet::new(),
            pending,
            repaint,
        }
    }

    /// Wakes this context whenever a result lands.
    pub fn set_context(&self, ctx: &eframe::egui::Context) {
        if let Ok(mut c) = self.repaint.lock()
            && c.is_none()
        {
            *c = Some(ctx.clone());
        }
    }

    /// Runs `job` unless a job with the same key is still running; returns whether it was queued.
    pub fn submit(
        &mut self,
        key: impl Into<String>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> bool {
        let key = key.into();
        if self.in_flight.contains(&key) {
            return false;
        }
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send((key.clone(), Box::new(job))).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        self.in_flight.insert(key);
        true
    }

    pub fn is_running(&self, key: &str) -> bool {
        self.in_flight.contains(key)
    }

    /// The results that landed since the last call.
    pub fn poll(&mut self) -> Vec<(String, T)> {
        let out: Vec<(String, T)> = self.results.try_iter().collect();
        for (k, _) in &out {
            self.in_flight.remove(k);
        }
        out
    }

    /// Jobs queued or running.
    pub fn busy(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    pub fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}
