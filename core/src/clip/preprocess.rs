//! CLIP's image preprocessing as transformers' `CLIPImageProcessor` does it: RGB, resize the
//! shortest side to `size` (the long side to `floor(size * long / short)`) with antialiased
//! bicubic resampling (the PIL / `torch` antialias kernel: cubic with a = -0.5, support widened
//! by the down-scaling factor, weights normalised per output pixel; each pass rounded and
//! clamped to 8 bits, as torch's uint8 kernel that transformers' default processor uses), centre crop `crop` x `crop` (offsets
//! `(h - crop) / 2` rounded down), rescale by 1/255, normalise with the OpenAI mean and std.

use std::path::Path;

/// OpenAI CLIP's normalisation constants (transformers `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`).
#[allow(clippy::excessive_precision)] // transformers' constants, verbatim.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The preprocessing settings (`preprocessor_config.json`'s `size.shortest_edge`,
/// `crop_size`, `image_mean`, `image_std`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClipPreprocess {
    pub shortest_edge: usize,
    pub crop: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ClipPreprocess {
    /// CLIP's defaults at `size` (224 for ViT-L/14).
    pub fn new(size: usize) -> Self {
        Self {
            shortest_edge: size,
            crop: size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// Reads `preprocessor_config.json` when it exists; defaults at `size` otherwise or for
    /// absent fields.
    pub fn from_dir(dir: &Path, size: usize) -> Result<Self, String> {
        let path = dir.join("preprocessor_config.json");
        let mut p = Self::new(size);
        if !path.is_file() {
            return Ok(p);
        }
        let bad = |reason: String| format!("{}: {reason}", path.display());
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let size_of = |v: &serde_json::Value, field: &str| -> Result<Option<usize>, String> {
            match v {
                serde_json::Value::Null => Ok(None),
                serde_json::Value::Number(n) => Ok(n.as_u64().map(|n| n as usize)),
                serde_json::Value::Object(o) => {
                    let k = ["shortest_edge", "height"]
                        .iter()
                        .find_map(|k| o.get(*k).and_then(|x| x.as_u64()));
                    k.map(|k| Some(k as usize))
                        .ok_or_else(|| bad(format!("field `{field}` has no size")))
                }
                _ => Err(bad(format!("field `{field}` is not a size"))),
            }
        };
        if let Some(s) = size_of(v.get("size").unwrap_or(&serde_json::Value::Null), "size")? {
            p.shortest_edge = s;
        }
        if let Some(s) = size_of(
            v.get("crop_size").unwrap_or(&serde_json::Value::Null),
            "crop_size",
        )? {
            p.crop = s;
        }
        for (field, target) in [("image_mean", &mut p.mean), ("image_std", &mut p.std)] {
            if let Some(a) = v.get(field) {
                let values: Vec<f32> = a
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_f64())
                            .map(|x| x as f32)
                            .collect()
                    })
                    .unwrap_or_default();
                if values.len() != 3 {
                    return Err(bad(format!("field `{field}` must hold three numbers")));
                }
                target.copy_from_slice(&values);
            }
        }
        if p.shortest_edge == 0 || p.crop == 0 || p.crop > p.shortest_edge {
            return Err(bad(format!(
                "crop {} must be positive and at most the resized shortest edge {}",
                p.crop, p.shortest_edge
            )));
        }
        if p.std.iter().any(|&s| s <= 0.0) {
            return Err(bad("field `image_std` must be positive".into()));
        }
        Ok(p)
    }

    /// An RGB8 image -> normalised pixels `[3, crop, crop]` (row-major).
    pub fn apply(&self, image: &image::RgbImage) -> Vec<f32> {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let (new_w, new_h) = if w <= h {
            (
                self.shortest_edge,
                (self.shortest_edge as f64 * h as f64 / w as f64) as usize,
            )
        } else {
            (
                (self.shortest_edge as f64 * w as f64 / h as f64) as usize,
                self.shortest_edge,
            )
        };
        let resized = resize_bicubic_aa(image.as_raw(), w, h, new_w, new_h);
        let top = (new_h - self.crop) / 2;
        let left = (new_w - self.crop) / 2;
        let c = self.crop;
        let mut out = vec![0f32; 3 * c * c];
        for ch in 0..3 {
            for y in 0..c {
                for x in 0..c {
                    let v = resized[((top + y) * new_w + left + x) * 3 + ch] as f32;
                    out[(ch * c + y) * c + x] = (v * (1.0 / 255.0) - self.mean[ch]) / self.std[ch];
                }
            }
        }
        out
    }
}

/// The cubic convolution kernel with a = -0.5 (PIL's and torch's antialias bicubic).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: the first input index and the normalised weights.
fn aa_weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(input);
            let raw: Vec<f64> = (lo..hi)
                .map(|j| cubic((j as f64 - center + 0.5) * inv))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|w| {
                    if total != 0.0 {
                        (w / total) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            (lo, weights)
        })
        .collect()
}

/// Separable antialiased bicubic resize of interleaved RGB8 `[h, w, 3]` -> `[new_h, new_w, 3]`,
/// horizontal pass then vertical, each rounded and clamped to 8 bits (as PIL and torch's uint8
/// kernel store the intermediate image; the clamp matters where the cubic overshoots).
pub fn resize_bicubic_aa(rgb: &[u8], w: usize, h: usize, new_w: usize, new_h: usize) -> Vec<u8> {
    let wx = aa_weights(w, new_w);
    let wy = aa_weights(h, new_h);
    let mut tmp = vec![0f32; h * new_w * 3];
    for y in 0..h {
        for (x, (lo, ws)) in wx.iter().enumerate() {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, wgt) in ws.iter().enumerate() {
                    acc += wgt * rgb[(y * w + lo + k) * 3 + c] as f32;
                }
                tmp[(y * new_w + x) * 3 + c] = acc.round().clamp(0.0, 255.0);
            }
        }
    }
    let mut out = vec![0u8; new_h * new_w * 3];
    for (y, (lo, ws)) in wy.iter().enumerate() {
        for x in 0..new_w {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, wgt) in ws.iter().enumerate() {
                    acc += wgt * tmp[((lo + k) * new_w + x) * 3 + c];
                }
                out[(y * new_w + x) * 3 + c] = acc.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}
