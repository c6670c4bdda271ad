//! NCCL for data-parallel training on CUDA devices (issue 16): one communicator per GPU over
//! every node (cudarc's `nccl` module, the library PyTorch DDP uses; `libnccl.so` is loaded at
//! run time, like the CUDA driver). Rank 0 of the run draws NCCL's unique id; on one node it is
//! handed to the GPU threads in the process, across nodes through the rendezvous. Each step,
//! every GPU averages the flat gradient buffer with one in-place `ncclAllReduce(ncclAvg)` per
//! chunk; the buffer goes through host memory (a copy to and from a cudarc buffer around the
//! call), which keeps burn's fused CUDA tensors out of the exchange at the cost of two PCIe
//! copies of the gradient per step.
//!
//! Built only with `--features cuda`; the CPU build has the same types, whose calls say so.

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::{Arc, Mutex};

    use cudarc::driver::{CudaContext, CudaStream};
    use cudarc::nccl::safe::{Comm, Id, ReduceOp};

    use crate::train::error::TrainError;

    fn err(text: String) -> TrainError {
        TrainError::Parallel(text)
    }

    /// Runs an NCCL or CUDA call that may panic inside cudarc (a library that cannot be
    /// loaded) and turns the panic into an error naming what was attempted.
    fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, TrainError> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(err(format!("{what}: {e}"))),
            Err(p) => {
                let reason = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(err(format!(
                    "{what}: {reason} (is libnccl.so.2 installed and on LD_LIBRARY_PATH? the \
                     PyTorch wheels carry one in nvidia/nccl/lib)"
                )))
            }
        }
    }

    /// NCCL's unique id of a new run (rank 0 draws it), 128 bytes.
    pub fn new_id() -> Result<Vec<u8>, TrainError> {
        guarded("drawing NCCL's unique id", || {
            let id = Id::new().map_err(|e| format!("{e:?}"))?;
            Ok(id.internal().iter().map(|&c| c as u8).collect())
        })
    }

    /// A communicator and the stream it runs on; used by one thread at a time (the mutex).
    struct Connected {
        comm: Comm,
        stream: Arc<CudaStream>,
    }

    // SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
    // concurrent; every use goes through `NcclSlot::comm`'s mutex.
    unsafe impl Send for Connected {}

    /// One GPU's NCCL endpoint: the run's id and the GPU's ordinal, connected on first use.
    pub struct NcclSlot {
        id: Vec<u8>,
        ordinal: usize,
        comm: Mutex<Option<Connected>>,
    }

    impl NcclSlot {
        pub fn new(id: Vec<u8>, ordinal: usize) -> Self {
            Self {
                id,
                ordinal,
                comm: Mutex::new(None),
            }
        }

        /// Joins the communicator as `rank` of `world` (blocks until every rank has).
        pub fn connect(&self, rank: usize, world: usize) -> Result<(), TrainError> {
            let ordinal = self.ordinal;
            let mut internal = [0 as core::ffi::c_char; 128];
            for (d, s) in internal.iter_mut().zip(&self.id) {
                *d = *s as core::ffi::c_char;
            }
            let connected = guarded(&format!("NCCL on cuda:{ordinal}"), || {
                let ctx = CudaContext::new(ordinal).map_err(|e| format!("{e:?}"))?;
                let stream = ctx.default_stream();
                let comm = Comm::from_rank(stream.clone(), rank, world, Id::uninit(internal))
                    .map_err(|e| format!("ncclCommInitRank: {e:?}"))?;
                Ok(Connected { comm, stream })
            })?;
            *self.comm.lock().unwrap_or_else(|e| e.into_inner()) = Some(connected);
            Ok(())
        }

        /// The average over every rank of `values` (in place on this GPU).
        pub fn mean(&self, values: Vec<f32>) -> Result<Vec<f32>, TrainError> {
            let guard = self.comm.lock().unwrap_or_else(|e| e.into_inner());
            let Some(c) = guard.as_ref() else {
                return Err(err(format!(
                    "NCCL on cuda:{} is not connected",
                    self.ordinal
                )));
            };
            guarded(&format!("ncclAllReduce on cuda:{}", self.ordinal), || {
                let mut buf = c.stream.clone_htod(&values).map_err(|e| format!("{e:?}"))?;
                c.comm
                    .all_reduce_in_place(&mut buf, &ReduceOp::Avg)
                    .map_err(|e| format!("{e:?}"))?;
                let out = c.stream.clone_dtoh(&buf).map_err(|e| format!("{e:?}"))?;
                c.stream.synchronize().map_err(|e| format!("{e:?}"))?;
                Ok(out)
            })
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use crate::train::error::TrainError;

    fn not_built() -> TrainError {
        TrainError::Parallel(
            "this flowlens was built without CUDA (and NCCL); rebuild with --features cuda".into(),
        )
    }

    pub fn new_id() -> Result<Vec<u8>, TrainError> {
        Err(not_built())
    }

    /// The CPU build's stand-in (never constructed on a CPU run).
    pub struct NcclSlot;

    impl NcclSlot {
        pub fn new(_id: Vec<u8>, _ordinal: usize) -> Self {
            NcclSlot
        }

        pub fn connect(&self, _rank: usize, _world: usize) -> Result<(), TrainError> {
            Err(not_built())
        }

        pub fn mean(&self, _values: Vec<f32>) -> Result<Vec<f32>, TrainError> {
            Err(not_built())
        }
    }
}

pub use imp::{NcclSlot, new_id};

/// The GPU ordinal of a device label (`cuda:3` -> 3, `cuda` -> 0); `None` for CPU devices.
pub fn cuda_ordinal(label: &str) -> Option<usize> {
    let l = label.trim().to_ascii_lowercase();
    if l == "cuda" || l == "gpu" {
        return Some(0);
    }
    l.strip_prefix("cuda:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_labels_give_their_ordinal_and_cpu_labels_none() {
        assert_eq!(cuda_ordinal("cuda:3"), Some(3));
        assert_eq!(cuda_ordinal("cuda"), Some(0));
        assert_eq!(cuda_ordinal("cpu:1"), None);
        assert_eq!(cuda_ordinal("Cpu"), None);
    }
}
