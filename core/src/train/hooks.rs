//! Training hooks: the periodic sample grid and the periodic evaluation, both on the EMA
//! weights, with their own fixed seeds (they never touch the training's random streams, so a
//! run with hooks has the same loss sequence as one without).

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;

use crate::codec::LatentCodec;
use crate::flow::rectified::SamplerConfig;
use crate::sample::generate::Generator;
use crate::sample::image::write_grid_png;
use crate::sample::oracle::{ShapesEval, shapes_adherence};
use crate::train::error::TrainError;
use crate::train::trainer::Trainer;

/// Noise seed of the sample grids and evaluations.
const HOOK_SEED: u64 = 0x5A4D_9E11;

fn sampler<B: AutodiffBackend>(t: &Trainer<B>) -> SamplerConfig {
    SamplerConfig {
        steps: t.config.eval_solver_steps,
        cfg: t.config.eval_cfg,
        ..Default::default()
    }
}

/// The generator of the EMA weights with `codec`.
fn ema<'a, B: AutodiffBackend>(
    t: &'a Trainer<B>,
    codec: &'a dyn LatentCodec<B::InnerBackend>,
) -> Generator<'a, B::InnerBackend> {
    Generator {
        model: &t.ema,
        flow: &t.flow,
        codec,
        tokenizer: &t.tokenizer,
    }
}

/// The prompts of the sample grid: 8 held-out shapes captions, or the first 8 training captions
/// for other data.
pub fn grid_prompts<B: AutodiffBackend>(t: &Trainer<B>) -> Vec<String> {
    match t.held_out_scenes(8) {
        Some(scenes) => scenes.iter().map(|s| s.caption()).collect(),
        None => t.data.captions().iter().take(8).cloned().collect(),
    }
}

/// Samples the grid prompts with the EMA weights and writes `samples/grid-step<N>.png` (and the
/// prompts next to it as `.txt`).
pub fn sample_grid<B: AutodiffBackend>(t: &Trainer<B>) -> Result<PathBuf, TrainError> {
    let prompts = grid_prompts(t);
    let codec = t.flow.codec.build::<B::InnerBackend>()?;
    let pixels =
        ema(t, codec.as_ref()).generate(&prompts, HOOK_SEED, &sampler(t), 16, t.device())?;
    let dir = t.run_dir().path("samples");
    std::fs::create_dir_all(&dir).map_err(|error| TrainError::Io {
        path: dir.clone(),
        error,
    })?;
    let path = dir.join(format!("grid-step{:08}.png", t.step));
    write_grid_png(&path, &pixels, t.flow.image_size, 4)?;
    let txt = path.with_extension("txt");
    crate::fsutil::write_atomic(&txt, prompts.join("\n").as_bytes())
        .map_err(|error| TrainError::Io { path: txt, error })?;
    Ok(path)
}

/// Oracle adherence of the EMA weights on `eval_n` held-out scenes (shapes data only; `None`
/// for other data, whose evaluation needs CLIP and FID networks).
pub fn evaluate<B: AutodiffBackend>(t: &Trainer<B>) -> Result<Option<ShapesEval>, TrainError> {
    let Some(scenes) = t.held_out_scenes(t.config.eval_n) else {
        return Ok(None);
    };
    let codec = t.flow.codec.build::<B::InnerBackend>()?;
    Ok(Some(shapes_adherence(
        &ema(t, codec.as_ref()),
        &scenes,
        &sampler(t),
        HOOK_SEED,
        32,
        t.device(),
    )?))
}
