//! Devices and backends chosen at run time: `--device cpu` (burn's flex backend, always built) or
//! `--device cuda:N` (burn-cuda, built with the `cuda` feature). Code is written once against
//! burn's `Backend` trait; [`DeviceSpec::run`] picks the concrete backend.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;

/// The CPU backend of the default build.
pub type CpuBackend = burn::backend::Flex;

/// The CUDA backend of a `--features cuda` build.
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device `{0}`: use `cpu`, `cuda` or `cuda:N`")]
    Parse(String),
    #[error(
        "this flowlens was built without CUDA support; rebuild with `cargo build --release --features cuda` to use {0}"
    )]
    NotBuilt(DeviceSpec),
    #[error("cannot use {device}: {reason}")]
    Unavailable { device: DeviceSpec, reason: String },
    #[error("--devices: {0}")]
    List(String),
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        // `cpu:N` names one of several CPU replicas (`--devices cpu:0,cpu:1`): the same backend.
        if lower
            .strip_prefix("cpu:")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Ok(DeviceSpec::Cpu);
        }
        match lower.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Parse(s.to_string())),
        }
    }
}

/// Work that runs on whichever backend the device selects.
pub trait BackendTask {
    type Output;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output;

    /// The same work given several devices of one backend ([`DeviceList`]; `labels` name them
    /// as the user did). Tasks that can use them (data-parallel training) override this; the
    /// others run on the first device.
    fn run_on<B: Backend>(self, devices: Vec<B::Device>, labels: Vec<String>) -> Self::Output
    where
        Self: Sized,
    {
        let _ = labels;
        let first = devices
            .into_iter()
            .next()
            .expect("a device list is never empty");
        self.run::<B>(first)
    }
}

/// Devices of one kind for data-parallel training: `cpu:0,cpu:1` (replicas on the CPU backend,
/// for tests and equivalence checks: they share the same cores) or `cuda:0,...,cuda:7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    specs: Vec<DeviceSpec>,
    labels: Vec<String>,
}

impl DeviceList {
    /// One device.
    pub fn single(spec: DeviceSpec) -> Self {
        Self {
            specs: vec![spec],
            labels: vec![spec.to_string()],
        }
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The first device.
    pub fn first(&self) -> DeviceSpec {
        self.specs[0]
    }

    /// The names as given (`cpu:0`, `cuda:3`).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Runs `task` with every device ([`BackendTask::run_on`]), after checking each one.
    pub fn run<T: BackendTask>(&self, task: T) -> Result<T::Output, DeviceError> {
        match self.specs[0] {
            DeviceSpec::Cpu => {
                let devices = vec![Default::default(); self.specs.len()];
                Ok(task.run_on::<CpuBackend>(devices, self.labels.clone()))
            }
            DeviceSpec::Cuda(_) => run_cuda_many(&self.specs, self.labels.clone(), task),
        }
    }
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.labels.join(","))
    }
}

impl FromStr for DeviceList {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let labels: Vec<String> = s
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        if labels.is_empty() {
            return Err(DeviceError::Parse(s.to_string()));
        }
        let specs = labels
            .iter()
            .map(|l| l.parse::<DeviceSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        let cpu = |d: &DeviceSpec| matches!(d, DeviceSpec::Cpu);
        if specs.iter().any(cpu) && !specs.iter().all(cpu) {
            return Err(DeviceError::List(format!(
                "`{s}` mixes CPU and CUDA devices; the devices of one run are of one kind"
            )));
        }
        for (i, l) in labels.iter().enumerate() {
            let twice = if cpu(&specs[i]) {
                labels[..i].contains(l) || (l == "cpu" && labels.len() > 1)
            } else {
                // Peers on one GPU only for a check of burn-collective (NCCL refuses them).
                specs[..i].contains(&specs[i])
                    && !std::env::var("FLOWLENS_EXCHANGE")
                        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("collective"))
            };
            if twice {
                return Err(DeviceError::List(format!(
                    "`{s}` names `{l}` twice (or a bare `cpu` among several); give each device \
                     once, e.g. cpu:0,cpu:1 or cuda:0,cuda:1"
                )));
            }
        }
        Ok(Self { specs, labels })
    }
}

impl DeviceSpec {
    /// Runs `task` on this device's backend, after checking that the device can be used (a
    /// missing driver or GPU is an error here, not a panic inside a backend thread later).
    pub fn run<T: BackendTask>(self, task: T) -> Result<T::Output, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(task.run::<CpuBackend>(Default::default())),
            DeviceSpec::Cuda(index) => run_cuda(index, task),
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<T: BackendTask>(index: usize, _task: T) -> Result<T::Output, DeviceError> {
    Err(DeviceError::NotBuilt(DeviceSpec::Cuda(index)))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda_many<T: BackendTask>(
    specs: &[DeviceSpec],
    _labels: Vec<String>,
    _task: T,
) -> Result<T::Output, DeviceError> {
    Err(DeviceError::NotBuilt(specs[0]))
}

#[cfg(feature = "cuda")]
fn run_cuda_many<T: BackendTask>(
    specs: &[DeviceSpec],
    labels: Vec<String>,
    task: T,
) -> Result<T::Output, DeviceError> {
    let mut devices = Vec::new();
    for spec in specs {
        let DeviceSpec::Cuda(index) = *spec else {
            return Err(DeviceError::List("mixed device kinds".into()));
        };
        let count = cuda_probe::device_count().map_err(|reason| DeviceError::Unavailable {
            device: *spec,
            reason,
        })?;
        if index >= count {
            return Err(DeviceError::Unavailable {
                device: *spec,
                reason: format!(
                    "the driver reports {count} GPU(s) (cuda:0..cuda:{})",
                    count.max(1) - 1
                ),
            });
        }
        devices.push(burn::backend::cuda::CudaDevice::new(index));
    }
    Ok(task.run_on::<CudaBackend>(devices, labels))
}

#[cfg(feature = "cuda")]
fn run_cuda<T: BackendTask>(index: usize, task: T) -> Result<T::Output, DeviceError> {
    let count = cuda_probe::device_count().map_err(|reason| DeviceError::Unavailable {
        device: DeviceSpec::Cuda(index),
        reason,
    })?;
    if index >= count {
        return Err(DeviceError::Unavailable {
            device: DeviceSpec::Cuda(index),
            reason: format!(
                "the driver reports {count} GPU(s) (cuda:0..cuda:{})",
                count.max(1) - 1
            ),
        });
    }
    Ok(task.run::<CudaBackend>(burn::backend::cuda::CudaDevice::new(index)))
}

/// Asks the CUDA driver directly (libcuda, loaded dynamically like burn-cuda does) whether it
/// works and how many devices it sees, so that failures become messages instead of panics.
#[cfg(feature = "cuda")]
mod cuda_probe {
    use libloading::{Library, Symbol};

    type CuInit = unsafe extern "C" fn(u32) -> i32;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut i32) -> i32;

    pub fn device_count() -> Result<usize, String> {
        // SAFETY: loading the system's CUDA driver library; its initialisers are the driver's.
        let lib = unsafe { Library::new("libcuda.so.1").or_else(|_| Library::new("libcuda.so")) }
            .map_err(|e| {
                format!("the NVIDIA driver library libcuda.so.1 cannot be loaded ({e}); is an NVIDIA driver installed?")
            })?;
        // SAFETY: symbol signatures from the CUDA driver API (cuda.h).
        unsafe {
            let init: Symbol<CuInit> = lib
                .get(b"cuInit\0")
                .map_err(|e| format!("libcuda has no cuInit: {e}"))?;
            let code = init(0);
            if code != 0 {
                return Err(format!(
                    "cuInit failed with CUDA error {code} (100 = no CUDA-capable device)"
                ));
            }
            let get_count: Symbol<CuDeviceGetCount> = lib
                .get(b"cuDeviceGetCount\0")
                .map_err(|e| format!("libcuda has no cuDeviceGetCount: {e}"))?;
            let mut count = 0i32;
            let code = get_count(&mut count);
            if code != 0 {
                return Err(format!("cuDeviceGetCount failed with CUDA error {code}"));
            }
            // The library stays loaded for the process: burn-cuda loads it again.
            std::mem::forget(lib);
            Ok(count.max(0) as usize)
        }
    }
}

/// Tells mimalloc (the binaries' global allocator) to keep freed memory instead of returning it
/// to the operating system after 10 ms: burn allocates a fresh buffer for most operations, and
/// every buffer that went back was faulted in again, zeroed page by page by the kernel (measured:
/// 11 % of a tiny-preset training step in `clear_page`, +10-15 % samples/s without it). Call it
/// first thing in `main`. The process's peak memory is what it was; it is just not given back
/// between steps.
#[cfg(feature = "mimalloc")]
pub fn keep_freed_memory() {
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t`.
    const PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: sets an option of the allocator this binary links (through the `mimalloc`
    // crate); any value is valid, -1 means "never purge".
    unsafe { mi_option_set(PURGE_DELAY, -1) };
}

/// Runs `f` on a thread of a rayon pool with one thread per core (`RAYON_NUM_THREADS` sets
/// another count). The kernels of a training step open dozens of parallel regions per layer;
/// from a thread outside the pool each one wakes the workers and puts the caller to sleep until
/// they finish (measured: 9 % of a tiny-preset step in futex wake-ups and context switches),
/// while from a worker the caller takes part in the work and the others steal from it. The
/// binaries run their whole command this way.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("flowlens-compute-{i}"))
        // The main thread's stack size: deep recursions (a long autodiff graph) stay safe.
        .stack_size(64 << 20)
        .build();
    match pool {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// The environment variable that caps how much memory flowlens plans to use, in GB (default:
/// the host's available memory).
pub const MEMORY_ENV: &str = "FLOWLENS_MEMORY_GB";

/// Memory a computation may plan to use, in bytes: `FLOWLENS_MEMORY_GB` when set, else the
/// host's `MemAvailable` (Linux), else 8 GB.
pub fn memory_budget() -> u64 {
    if let Some(gb) = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|g| *g > 0.0 && g.is_finite())
    {
        return (gb * 1e9) as u64;
    }
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(8_000_000_000, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert_eq!("cpu:1".parse(), Ok(DeviceSpec::Cpu));
    }

    #[test]
    fn device_lists_name_each_device_once_and_of_one_kind() {
        let list: DeviceList = "cpu:0, cpu:1".parse().unwrap();
        assert_eq!(
            (list.len(), list.labels()),
            (2, &["cpu:0".to_string(), "cpu:1".into()][..])
        );
        assert_eq!(list.to_string(), "cpu:0,cpu:1");
        let cuda: DeviceList = "cuda:0,cuda:3".parse().unwrap();
        assert_eq!(cuda.first(), DeviceSpec::Cuda(0));
        for bad in [
            "cpu:0,cpu:0",
            "cpu,cpu",
            "cpu:0,cuda:0",
            "cuda,cuda:0",
            "cuda:0,cuda",
            "",
            "cpu:0,tpu",
        ] {
            assert!(bad.parse::<DeviceList>().is_err(), "{bad}");
        }
        let err = "cpu:0,cuda:1"
            .parse::<DeviceList>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("mixes CPU and CUDA"), "{err}");
    }

    struct Count;
    impl BackendTask for Count {
        type Output = (usize, Vec<String>);
        fn run<B: Backend>(self, _: B::Device) -> Self::Output {
            (1, vec![])
        }
        fn run_on<B: Backend>(self, devices: Vec<B::Device>, labels: Vec<String>) -> Self::Output {
            (devices.len(), labels)
        }
    }

    #[test]
    fn a_cpu_list_runs_one_task_with_every_replica() {
        let list: DeviceList = "cpu:0,cpu:1,cpu:2".parse().unwrap();
        let (n, labels) = list.run(Count).unwrap();
        assert_eq!((n, labels.len()), (3, 3));
    }

    struct Name;
    impl BackendTask for Name {
        type Output = String;
        fn run<B: Backend>(self, device: B::Device) -> String {
            B::name(&device)
        }
    }

    #[test]
    fn cpu_runs_on_flex_and_cuda_without_gpu_is_an_error() {
        assert_eq!(DeviceSpec::Cpu.run(Name).unwrap(), "flex");
        // No GPU on the CI machine: either the build has no CUDA, or the probe fails cleanly.
        if std::path::Path::new("/dev/nvidia0").exists() {
            return;
        }
        let err = DeviceSpec::Cuda(0).run(Name).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::NotBuilt(_) | DeviceError::Unavailable { .. }
        ));
    }
}
