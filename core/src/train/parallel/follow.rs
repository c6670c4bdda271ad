//! Another node of a multi-node run: joins node 0, takes its starting state, and runs the steps
//! node 0 starts.

use std::sync::{Arc, Mutex};

use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use super::{
    Inner, Layout, Locals, Placement, Replica, cuda_ordinal, numel, param_checksum, realise,
};
use crate::flow::FlowModel;
use crate::train::config::TrainConfig;
use crate::train::error::TrainError;
use crate::train::grads::Optim;
use crate::train::nodes::NodeSpec;
use crate::train::prepare::Prepare;

/// `module` with every float parameter's values taken from `values` in module order.
fn with_values<B: Backend, M: Module<B>>(module: M, values: &[f32]) -> Result<M, TrainError> {
    struct Load<'a> {
        values: &'a [f32],
        offset: usize,
        short: bool,
    }
    impl<B: Backend> burn::module::ModuleMapper<B> for Load<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let dims = tensor.dims();
            let n = numel(&dims);
            let Some(v) = self.values.get(self.offset..self.offset + n) else {
                self.short = true;
                return Param::from_mapped_value(id, tensor, mapper);
            };
            self.offset += n;
            let t = Tensor::from_data(TensorData::new(v.to_vec(), dims), &tensor.device())
                .set_require_grad(tensor.is_require_grad());
            Param::from_mapped_value(id, t, mapper)
        }
    }
    let mut load = Load {
        values,
        offset: 0,
        short: false,
    };
    let module = module.map(&mut load);
    if load.short || load.offset != values.len() {
        return Err(TrainError::Parallel(format!(
            "node 0 sent {} parameter values, this node's model has {}: the nodes run different \
             models",
            values.len(),
            load.offset
        )));
    }
    Ok(module)
}

/// Trains as node `spec.node_rank` (not 0) of a multi-node run: joins node 0, takes its
/// starting state (the parameters it sends, or the checkpoint of the start step in `run_dir`,
/// which this node reads and never writes), and runs every step node 0 starts on `devices`
/// (this node's, the first one on this thread), until node 0 says training is over.
pub fn follow<B: AutodiffBackend>(
    config: TrainConfig,
    run_dir: &std::path::Path,
    devices: Vec<B::Device>,
    labels: Vec<String>,
    check_every: usize,
    spec: &NodeSpec,
    progress: &mut dyn FnMut(Prepare),
) -> Result<(), TrainError>
where
    FlowModel<B>: Send + 'static,
    Optim<B>: Send + 'static,
{
    config.check()?;
    let world = devices.len();
    let (link, welcome) = crate::train::nodes::join(spec, &config, world)?;
    let mut link = link;
    let mut devices = devices.into_iter();
    let device = devices.next().expect("a device list is never empty");
    let (inputs, model) =
        crate::train::prepare::follower_state::<B>(&config, run_dir, &device, progress)?;
    let (model, optim_heads, optim_llm) = if welcome.start_step == 0 {
        let values = link.broadcast(None)?;
        let model = with_values(model, &values)?;
        (
            model,
            crate::train::grads::adamw::<B>(),
            crate::train::grads::adamw::<B>(),
        )
    } else {
        let dir = crate::checkpoint::step_dir(run_dir, welcome.start_step);
        crate::train::state::load_state(model, &dir, &device)?
    };
    realise(&model);
    let sum = param_checksum(&model);
    if sum != welcome.checksum {
        return Err(TrainError::Parallel(format!(
            "node {}: the starting parameters differ from node 0's (checksums {sum:016x} and \
             {:016x}); does every node read the same run folder {}?",
            spec.node_rank,
            welcome.checksum,
            run_dir.display()
        )));
    }
    let gpus = labels.iter().all(|l| cuda_ordinal(l).is_some());
    if gpus != welcome.nccl_id.is_some() {
        return Err(TrainError::Parallel(format!(
            "node {} trains on {} but node 0 on {}: every node uses devices of one kind",
            spec.node_rank,
            if gpus { "GPUs" } else { "the CPU" },
            if gpus { "the CPU" } else { "GPUs" }
        )));
    }
    let placement = Placement {
        node_rank: spec.node_rank,
        nnodes: spec.nnodes,
        link: Some(Arc::new(Mutex::new(link))),
        nccl_id: welcome.nccl_id.clone(),
    };
    let label = labels.first().cloned().unwrap_or_else(|| "device 0".into());
    let exchange = placement.exchange(0, world, label);
    let mut locals = Locals::start(
        &model,
        (&optim_heads, &optim_llm),
        &inputs,
        &exchange,
        &device,
        devices.collect(),
        &labels,
        &placement,
        check_every,
    )?;
    let mut leader = Replica::<B> {
        layout: Layout::of(&model),
        model,
        optim_heads,
        optim_llm,
        inputs,
        device,
        exchange: exchange.clone(),
        check_every,
    };
    let link = placement.link.clone().expect("set above");
    loop {
        let next = link.lock().unwrap_or_else(|e| e.into_inner()).wait_go()?;
        let Some(step) = next else { break };
        locals.begin(step)?;
        let sum = leader.step(step).map_err(TrainError::Parallel)?;
        locals.collect(sum, &exchange.label, &format!("after step {step}"))?;
        if let Some(sum) = sum {
            link.lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(sum, step)?;
        }
    }
    if !locals.broken {
        exchange.finish::<Inner<B>>();
    }
    Ok(())
}
