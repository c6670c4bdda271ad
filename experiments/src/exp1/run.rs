//! Running experiment 1: both runs sampled with the encoder and LLM taps at the probed solver
//! steps into `probes-exp1`, then analysed into `out/exp1/results.json`.

use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use flowlens_core::flow::FlowConfig;
use flowlens_core::flow::taps::llm_tap_name;
use flowlens_core::run::RunDir;
use flowlens_core::train::TrainConfig;

use crate::exp1::analyse::{Results, analyse};
use crate::exp1::prior::{prior_dir, prior_features};
use crate::io::write_json;
use crate::pipeline::{Log, ensure_sampled, require_trained};
use crate::protocol::ExperimentFile;

/// Experiment 1; writes `out/exp1/results.json`.
pub fn run<B: Backend>(file: &ExperimentFile, device: &B::Device, log: &Log) -> Result<Results> {
    let c = &file.exp1;
    let ours = file.resolve_run(&c.ours, c.probing.run_seed);
    let baseline = file.resolve_run(&c.baseline, c.probing.run_seed);
    require_trained(&ours, "exp1's `ours`")?;
    require_trained(&baseline, "exp1's `baseline`")?;
    for run in [&ours, &baseline] {
        let config: TrainConfig = RunDir::open(run)?.config()?;
        let flow = FlowConfig::of(config.preset, config.variant);
        let n = flow.llm.num_hidden_layers;
        if let Some(l) = c.layers.iter().find(|&&l| l > n) {
            bail!(
                "[exp1] layers: layer {l} does not exist in the LLM of {} ({n} layers: hidden states 0 to {n}, {n} = after the final norm)",
                run.display()
            );
        }
    }
    let mut taps = vec!["enc.text".to_string(), "enc.noise".to_string()];
    for &l in &c.layers {
        taps.push(llm_tap_name(l, "text"));
        taps.push(llm_tap_name(l, "image"));
    }
    let mut steps = c.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    let mut stores = Vec::new();
    for run in [&ours, &baseline] {
        stores.push(ensure_sampled::<B>(
            run,
            flowlens_core::checkpoint::CheckpointChoice::Latest,
            "probes-exp1",
            &c.probing,
            &taps,
            Some(steps.clone()),
            c.pooling,
            device,
            log,
        )?);
    }
    // The frozen-prior reading needs one prior both runs started from.
    let prior = match (prior_dir(&ours)?, prior_dir(&baseline)?) {
        (Some(a), Some(b)) if a == b => {
            log.say(format!(
                "experiment 1: the frozen prior's hidden states on the captions ({})",
                a.display()
            ));
            Some(prior_features::<B>(
                &ours,
                &a,
                &stores[0].manifest.prompts,
                &c.layers,
                c.pooling,
                device,
            )?)
        }
        (Some(a), Some(b)) => {
            log.say(format!(
                "experiment 1: no frozen-prior reading: the runs started from different priors ({} and {})",
                a.display(),
                b.display()
            ));
            None
        }
        _ => {
            log.say("experiment 1: no frozen-prior reading: a run starts from a random LLM");
            None
        }
    };
    log.say("experiment 1: CKA of the streams vs the LLM layers");
    let results = analyse(&stores[0], &stores[1], c, prior.as_ref())?;
    write_json(&file.out.join("exp1/results.json"), &results)?;
    Ok(results)
}
