//! Images as PNG files: `[-1, 1]` pixels `[n, 3, s, s]` to 8-bit RGB, one image or a grid,
//! written under a temporary name and renamed into place.

use std::path::Path;

use crate::sample::error::SampleError;

fn rgb_bytes(pixels: &[f32]) -> impl Iterator<Item = u8> + '_ {
    pixels
        .iter()
        .map(|v| ((v + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
}

/// Maps `[-1, 1]` pixels `[3, s, s]` to an RGB PNG (written to a temporary name and renamed).
pub fn write_png(path: &Path, pixels: &[f32], size: usize) -> Result<(), SampleError> {
    write_grid_png(path, pixels, size, 1)
}

/// Writes `n` images `[n, 3, s, s]` as one PNG grid of `cols` columns with a 2-pixel white gap.
pub fn write_grid_png(
    path: &Path,
    pixels: &[f32],
    size: usize,
    cols: usize,
) -> Result<(), SampleError> {
    let per = 3 * size * size;
    let n = pixels.len() / per;
    let cols = cols.clamp(1, n.max(1));
    let rows = n.div_ceil(cols);
    let gap = if n > 1 { 2 } else { 0 };
    let (w, h) = (
        cols * size + (cols - 1) * gap,
        rows * size + (rows - 1) * gap,
    );
    let mut img = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    for (i, chunk) in pixels.chunks(per).enumerate() {
        let bytes: Vec<u8> = rgb_bytes(chunk).collect();
        let (ox, oy) = ((i % cols) * (size + gap), (i / cols) * (size + gap));
        for y in 0..size {
            for x in 0..size {
                let px = [0, 1, 2].map(|c| bytes[(c * size + y) * size + x]);
                img.put_pixel((ox + x) as u32, (oy + y) as u32, image::Rgb(px));
            }
        }
    }
    let failed = |reason: String| SampleError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let tmp = path.with_extension("partial.png");
    img.save(&tmp).map_err(|e| failed(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| failed(e.to_string()))
}
