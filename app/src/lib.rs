//! flowlens-lab, the desktop laboratory: browse and compare runs, launch and watch training and
//! the paper's experiments, explore CKA (heatmaps, curves with ±SE, Δ views, permutation nulls,
//! AUC and time-to-threshold, mutual k-NN drill-down), step through sampling trajectories,
//! sample interactively, and export figures and tables with the report's look.
//!
//! Layout (ARCHITECTURE.md): [`app`] is the shell that draws each frame ([`app::LabApp`]) and
//! applies what the tabs ask for; [`panels`] holds one file per tab behind the [`panels::Panel`]
//! trait; [`lab`] is the read model they draw from and [`command`] what they ask for; [`widgets`]
//! are shared by several panels (heatmap, image cache, grid views, device picker). [`jobs`] runs
//! every file read and computation off the UI thread; [`catalog`], [`metrics`] and [`grid`] read
//! run directories; [`launch`] starts `flowlens` child processes; [`sampling`] samples in-process
//! on a background thread; [`export`] goes through the analysis crate's figures and tables;
//! [`softrender`] paints frames on the CPU for `--screenshot` and the snapshot tests.

pub mod app;
pub mod catalog;
pub mod command;
pub mod export;
pub mod fixture;
pub mod grid;
pub mod jobs;
pub mod lab;
pub mod launch;
pub mod metrics;
pub mod panels;
pub mod results;
pub mod sampling;
pub mod softrender;
pub mod study;
pub mod widgets;

pub use app::LabApp;

use std::path::Path;
use std::time::Duration;

use eframe::egui;

/// The input of a headless frame: a `width` x `height` window at one pixel per point.
pub fn headless_input(width: f32, height: f32, time: f64) -> egui::RawInput {
    let mut input = egui::RawInput {
        screen_rect: Some(egui::Rect::from_min_size(
            egui::Pos2::ZERO,
            egui::vec2(width, height),
        )),
        time: Some(time),
        ..Default::default()
    };
    input
        .viewports
        .entry(egui::ViewportId::ROOT)
        .or_default()
        .native_pixels_per_point = Some(1.0);
    input
}

/// Runs the app headless for `frames` frames of a `width` x `height` window, letting background
/// jobs finish between frames, and returns the last frame painted by [`softrender`].
pub fn render_headless(
    app: &mut LabApp,
    width: f32,
    height: f32,
    frames: usize,
    configure: impl Fn(&mut LabApp),
) -> softrender::Pixels {
    let ctx = egui::Context::default();
    let mut renderer = softrender::SoftRenderer::default();
    let mut last = None;
    for i in 0..frames.max(1) {
        let input = headless_input(width, height, i as f64 * 0.1);
        configure(app);
        let mut output = ctx.run_ui(input, |ui| app.ui(ui));
        // Keep every texture upload; paint only the last frame.
        renderer.set_textures(&output.textures_delta);
        renderer.free_textures(&output.textures_delta);
        output.textures_delta.clear();
        app.settle(&ctx, Duration::from_secs(60));
        last = Some(output);
    }
    renderer.paint_frame(&ctx, &last.expect("at least one frame"))
}

/// Saves RGBA pixels as a PNG.
pub fn save_png(pixels: &softrender::Pixels, path: &Path) -> anyhow::Result<()> {
    let img = image::RgbaImage::from_raw(pixels.width, pixels.height, pixels.rgba.clone())
        .ok_or_else(|| anyhow::anyhow!("pixel buffer of the wrong size"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    img.save(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}
