//! The timing of the gradient average alone, for the benchmark of docs/PERFORMANCE.md.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;

use super::{Inner, Layout, Placement, Session, average, in_part, realise};
use crate::flow::FlowModel;
use crate::train::error::TrainError;
use crate::train::trainer::LocalGrads;

/// Times the stage-2 gradient average of `model` (every trainable parameter, the LLM's
/// included) across `world` replicas of this process, `rounds` times: seconds per round on the
/// first device. The benchmark of docs/PERFORMANCE.md (`cargo bench -p flowlens-core --bench
/// exchange`); gradients are constants, the cost does not depend on their values.
pub fn time_average<B: AutodiffBackend>(
    model: &FlowModel<B>,
    device: &B::Device,
    world: usize,
    rounds: usize,
) -> Result<Vec<f64>, TrainError>
where
    FlowModel<B>: Send + 'static,
{
    struct Fill<'a> {
        layout: &'a Layout,
        llm: bool,
        out: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Fill<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if in_part(param, &self.layout.llm, self.llm) {
                let g = Tensor::<Inner<B>, D>::ones(param.val().dims(), &param.val().device());
                self.out.register::<Inner<B>, D>(param.id, g);
            }
        }
    }
    let _session = Session::acquire::<Inner<B>>();
    realise(model);
    let grads = |model: &FlowModel<B>| {
        let layout = Layout::of(model);
        let mut heads = Fill {
            layout: &layout,
            llm: false,
            out: GradientsParams::new(),
        };
        model.visit(&mut heads);
        let mut llm = Fill {
            layout: &layout,
            llm: true,
            out: GradientsParams::new(),
        };
        model.llm.visit(&mut llm);
        LocalGrads {
            heads: heads.out,
            llm: Some(llm.out),
            loss_sum: 1.0,
        }
    };
    let exchange =
        move |rank: usize| Placement::single().exchange(rank, world, format!("device {rank}"));
    let run = move |model: FlowModel<B>, device: B::Device, rank: usize| {
        let ex = exchange(rank);
        ex.register::<Inner<B>>(device.clone())?;
        let layout = Layout::of(&model);
        let mut times = Vec::new();
        for _ in 0..rounds {
            let started = std::time::Instant::now();
            average(&ex, &layout, &model, &device, 2, Ok(grads(&model)))
                .map_err(|_| TrainError::Parallel("the timed average failed".into()))?;
            times.push(started.elapsed().as_secs_f64());
        }
        ex.finish::<Inner<B>>();
        Ok::<_, TrainError>(times)
    };
    let others: Vec<_> = (1..world)
        .map(|rank| {
            let (m, d) = (model.clone(), device.clone());
            std::thread::spawn(move || run(m, d, rank))
        })
        .collect();
    let times = run(model.clone(), device.clone(), 0);
    for h in others {
        h.join()
            .map_err(|_| TrainError::Parallel("a timing thread panicked".into()))??;
    }
    times
}
