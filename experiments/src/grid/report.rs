//! `flowlens grid`'s section of the report: the layer x solver-step heatmap and the long-form
//! CSV.

use anyhow::Result;
use flowlens_analysis::figures::Heatmap;
use flowlens_core::flow::taps::llm_layer;
use ndarray::Array2;

use crate::grid::analyse::Results;
use crate::report::blocks::{Block, Section, layer_label, num};

pub fn section(r: &Results, prefix: &str, name: &str) -> Result<Section> {
    let mut out = Section::new(prefix);
    let mut blocks = vec![
        Block::Heading(2, format!("Grid: {} vs {} ({})", r.a, r.b, r.run)),
        Block::Para(format!(
            "CKA ({}) of `{}` with every tap matching `{}`, at every written solver step, mean \
             over sampling seeds {:?} ({} prompts).",
            r.estimator, r.a, r.b, r.seeds, r.n_prompts
        )),
    ];
    let values = Array2::from_shape_fn((r.taps.len(), r.steps.len()), |(i, j)| r.mean[i][j]);
    // LLM taps are labelled by layer (short labels keep the axis title clear of them).
    let layers: Option<Vec<usize>> = r.taps.iter().map(|t| llm_layer(t)).collect();
    let (y_label, y_ticks) = match layers {
        Some(l) => (
            "LLM layer".to_string(),
            l.iter().map(|&l| layer_label(l)).collect(),
        ),
        None => ("tap".to_string(), r.taps.clone()),
    };
    let stem = out.figure(
        Heatmap {
            title: format!("CKA: {} vs {}", r.a, r.b),
            x_label: "solver step".into(),
            y_label,
            x_ticks: r.steps.iter().map(|s| s.to_string()).collect(),
            y_ticks,
            values,
            diverging: false,
            annotate: r.steps.len() <= 12,
            colorbar_label: format!("linear CKA ({})", r.estimator),
            range: None,
            crossed: None,
        },
        &format!("grid_{name}"),
    );
    blocks.push(Block::Figure {
        stem,
        caption: "Layer × solver-step CKA grid.".into(),
    });
    let mut long = Vec::new();
    for (i, tap) in r.taps.iter().enumerate() {
        for (j, step) in r.steps.iter().enumerate() {
            long.push(vec![
                tap.clone(),
                step.to_string(),
                num(r.ts[j]),
                num(r.mean[i][j]),
                num(r.se[i][j]),
            ]);
        }
    }
    let csv = out.csv(
        &format!("grid_{name}"),
        &["tap", "step", "t", "cka_mean", "cka_se"],
        &long,
    );
    blocks.push(Block::Files(vec![csv]));
    Ok(out.with(blocks))
}
