//! The image cache that shows PNGs from run directories: decoded on a worker thread, uploaded
//! as textures, a missing file (a preview being written) asked for again after a second.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use eframe::egui::{self, Color32, TextureHandle, Vec2};

/// Textures of PNG files, decoded off the UI thread. A file that does not exist (yet: a
/// preview being written) is asked for again after a second, never by the UI thread itself.
#[derive(Default)]
pub struct Images {
    textures: HashMap<PathBuf, TextureHandle>,
    requested: HashSet<PathBuf>,
    failed: HashMap<PathBuf, (DecodeError, std::time::Instant)>,
}

/// Why an image could not be shown.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    Missing,
    Bad(String),
}

/// A decoded image on its way to the UI.
pub type Decoded = Result<egui::ColorImage, DecodeError>;

/// The largest texture side the lab uploads.
pub const MAX_SIDE: u32 = 2048;

pub fn decode_png(path: &Path) -> Decoded {
    if !path.is_file() {
        return Err(DecodeError::Missing);
    }
    let mut img =
        image::open(path).map_err(|e| DecodeError::Bad(format!("{}: {e}", path.display())))?;
    // A texture side above 2048 is refused by some GPUs (and panics egui): the report's 3x
    // figures are shown downscaled.
    if img.width().max(img.height()) > MAX_SIDE {
        img = img.resize(MAX_SIDE, MAX_SIDE, image::imageops::FilterType::Triangle);
    }
    let rgba = img.to_rgba8();
    Ok(egui::ColorImage::from_rgba_unmultiplied(
        [rgba.width() as usize, rgba.height() as usize],
        rgba.as_raw(),
    ))
}

impl Images {
    /// Whether `path` is decoded and uploaded (a panel asks for it otherwise).
    pub fn loaded(&self, path: &Path) -> bool {
        self.textures.contains_key(path)
    }

    /// Whether `path` should be decoded now (the caller submits it to the worker).
    pub fn wanted(&mut self, path: &Path) -> bool {
        if self.textures.contains_key(path) || self.requested.contains(path) {
            return false;
        }
        match self.failed.get(path) {
            Some((DecodeError::Missing, at)) if at.elapsed().as_secs_f64() > 1.0 => {
                self.failed.remove(path);
            }
            Some(_) => return false,
            None => {}
        }
        self.requested.insert(path.to_path_buf())
    }

    pub fn insert(&mut self, ctx: &egui::Context, path: PathBuf, image: Decoded) {
        self.requested.remove(&path);
        match image {
            Ok(img) => {
                let tex = ctx.load_texture(
                    path.display().to_string(),
                    img,
                    egui::TextureOptions::NEAREST,
                );
                self.textures.insert(path, tex);
            }
            Err(e) => {
                self.failed.insert(path, (e, std::time::Instant::now()));
            }
        }
    }

    /// Shows the image scaled to fit `max` (keeping its aspect), a spinner while it loads,
    /// `missing` when there is no such file, or the decoding error.
    pub fn show(
        &self,
        ui: &mut egui::Ui,
        path: &Path,
        max: Vec2,
        missing: &str,
    ) -> Option<egui::Response> {
        if let Some(tex) = self.textures.get(path) {
            let size = tex.size_vec2();
            let scale = (max.x / size.x).min(max.y / size.y);
            return Some(ui.add(egui::Image::new((tex.id(), size * scale))));
        }
        match self.failed.get(path) {
            Some((DecodeError::Missing, _)) => {
                ui.weak(missing);
            }
            Some((DecodeError::Bad(e), _)) => {
                ui.colored_label(Color32::LIGHT_RED, e);
            }
            None => {
                ui.spinner();
            }
        }
        None
    }
}
