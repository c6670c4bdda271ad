//! A small CPU rasteriser for egui's tessellated output: it turns a frame into RGBA pixels with no
//! GPU, no window and no driver, identically on every machine. `flowlens-lab --screenshot` and
//! the snapshot tests use it (egui_kittest's own renderer needs a wgpu adapter).
//!
//! Triangles are filled at pixel centres with barycentric interpolation of the vertex colours
//! (premultiplied sRGBA, as epaint emits them) and texture coordinates, textures sampled
//! bilinearly (or nearest, per the texture's options), blended premultiplied-over, inside each
//! primitive's clip rectangle. egui's feathered edges give the anti-aliasing.

use std::collections::HashMap;

use eframe::egui::{self, TextureId, epaint};

struct Texture {
    size: [usize; 2],
    pixels: Vec<[u8; 4]>,
    nearest: bool,
}

impl Texture {
    fn texel(&self, x: usize, y: usize) -> [f32; 4] {
        let p = self.pixels[y.min(self.size[1] - 1) * self.size[0] + x.min(self.size[0] - 1)];
        [p[0] as f32, p[1] as f32, p[2] as f32, p[3] as f32]
    }

    fn sample(&self, u: f32, v: f32) -> [f32; 4] {
        let (w, h) = (self.size[0] as f32, self.size[1] as f32);
        if self.nearest {
            return self.texel((u * w).max(0.0) as usize, (v * h).max(0.0) as usize);
        }
        let x = (u * w - 0.5).clamp(0.0, w - 1.0);
        let y = (v * h - 0.5).clamp(0.0, h - 1.0);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let (a, b) = (self.texel(x0, y0), self.texel(x0 + 1, y0));
        let (c, d) = (self.texel(x0, y0 + 1), self.texel(x0 + 1, y0 + 1));
        let mut out = [0.0; 4];
        for i in 0..4 {
            let top = a[i] + (b[i] - a[i]) * fx;
            let bottom = c[i] + (d[i] - c[i]) * fx;
            out[i] = top + (bottom - top) * fy;
        }
        out
    }
}

/// Keeps the textures egui uploads and paints frames.
#[derive(Default)]
pub struct SoftRenderer {
    textures: HashMap<TextureId, Texture>,
}

/// An RGBA8 image, rows top to bottom.
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl SoftRenderer {
    /// Applies new and changed textures (call with every frame's `textures_delta`).
    pub fn set_textures(&mut self, delta: &epaint::textures::TexturesDelta) {
        for (id, patches) in &delta.set {
            for patch in patches {
                let epaint::ImageData::Color(image) = &patch.image;
                let nearest = patch.options.magnification == egui::TextureFilter::Nearest;
                let pixels: Vec<[u8; 4]> = image.pixels.iter().map(|c| c.to_array()).collect();
                match patch.pos {
                    None => {
                        self.textures.insert(
                            *id,
                            Texture {
                                size: image.size,
                                pixels,
                                nearest,
                            },
                        );
                    }
                    Some([x0, y0]) => {
                        if let Some(t) = self.textures.get_mut(id) {
                            for y in 0..image.size[1] {
                                for x in 0..image.size[0] {
                                    let (tx, ty) = (x0 + x, y0 + y);
                                    if tx < t.size[0] && ty < t.size[1] {
                                        t.pixels[ty * t.size[0] + tx] =
                                            pixels[y * image.size[0] + x];
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Frees the textures egui released (call after painting).
    pub fn free_textures(&mut self, delta: &epaint::textures::TexturesDelta) {
        for id in &delta.free {
            self.textures.remove(id);
        }
    }

    /// Paints `primitives` on a `width` x `height` canvas filled with `background`.
    pub fn paint(
        &self,
        primitives: &[epaint::ClippedPrimitive],
        pixels_per_point: f32,
        width: u32,
        height: u32,
        background: egui::Color32,
    ) -> Pixels {
        let (w, h) = (width as usize, height as usize);
        let bg = background.to_array().map(|c| c as f32);
        let mut canvas = vec![bg; w * h];
        for prim in primitives {
            let epaint::Primitive::Mesh(mesh) = &prim.primitive else {
                continue;
            };
            let Some(tex) = self.textures.get(&mesh.texture_id) else {
                continue;
            };
            let clip = prim.clip_rect;
            let cx0 = (clip.min.x * pixels_per_point).round().max(0.0) as i64;
            let cy0 = (clip.min.y * pixels_per_point).round().max(0.0) as i64;
            let cx1 = ((clip.max.x * pixels_per_point).round() as i64).min(w as i64);
            let cy1 = ((clip.max.y * pixels_per_point).round() as i64).min(h as i64);
            for tri in mesh.indices.chunks_exact(3) {
                let v = [
                    &mesh.vertices[tri[0] as usize],
                    &mesh.vertices[tri[1] as usize],
                    &mesh.vertices[tri[2] as usize],
                ];
                let p: Vec<(f32, f32)> = v
                    .iter()
                    .map(|v| (v.pos.x * pixels_per_point, v.pos.y * pixels_per_point))
                    .collect();
                let area =
                    (p[1].0 - p[0].0) * (p[2].1 - p[0].1) - (p[2].0 - p[0].0) * (p[1].1 - p[0].1);
                if area.abs() < 1e-12 {
                    continue;
                }
                let min_x = p.iter().map(|q| q.0).fold(f32::INFINITY, f32::min).floor() as i64;
                let max_x = p
                    .iter()
                    .map(|q| q.0)
                    .fold(f32::NEG_INFINITY, f32::max)
                    .ceil() as i64;
                let min_y = p.iter().map(|q| q.1).fold(f32::INFINITY, f32::min).floor() as i64;
                let max_y = p
                    .iter()
                    .map(|q| q.1)
                    .fold(f32::NEG_INFINITY, f32::max)
                    .ceil() as i64;
                let colours: Vec<[f32; 4]> = v
                    .iter()
                    .map(|v| v.color.to_array().map(|c| c as f32))
                    .collect();
                for y in min_y.max(cy0)..max_y.min(cy1) {
                    let py = y as f32 + 0.5;
                    for x in min_x.max(cx0)..max_x.min(cx1) {
                        let px = x as f32 + 0.5;
                        let w0 =
                            ((p[1].0 - px) * (p[2].1 - py) - (p[2].0 - px) * (p[1].1 - py)) / area;
                        let w1 =
                            ((p[2].0 - px) * (p[0].1 - py) - (p[0].0 - px) * (p[2].1 - py)) / area;
                        let w2 = 1.0 - w0 - w1;
                        // A little slack so a pixel centre on an edge shared by two triangles
                        // is not missed by both through rounding.
                        const EPS: f32 = -1e-5;
                        if w0 < EPS || w1 < EPS || w2 < EPS {
                            continue;
                        }
                        let u = w0 * v[0].uv.x + w1 * v[1].uv.x + w2 * v[2].uv.x;
                        let t = w0 * v[0].uv.y + w1 * v[1].uv.y + w2 * v[2].uv.y;
                        let texel = tex.sample(u, t);
                        let mut src = [0.0f32; 4];
                        for i in 0..4 {
                            let c = w0 * colours[0][i] + w1 * colours[1][i] + w2 * colours[2][i];
                            src[i] = c * texel[i] / 255.0;
                        }
                        let dst = &mut canvas[y as usize * w + x as usize];
                        let keep = 1.0 - src[3] / 255.0;
                        for i in 0..4 {
                            dst[i] = (src[i] + dst[i] * keep).clamp(0.0, 255.0);
                        }
                    }
                }
            }
        }
        Pixels {
            width,
            height,
            rgba: canvas
                .iter()
                .flat_map(|c| c.map(|x| x.round() as u8))
                .collect(),
        }
    }

    /// Tessellates and paints one egui frame at the size of the context's screen, on the
    /// panel colour. Apply the frame's textures first ([`Self::set_textures`]).
    pub fn paint_frame(&self, ctx: &egui::Context, output: &egui::FullOutput) -> Pixels {
        let ppp = output.pixels_per_point;
        let rect = ctx.content_rect();
        let (width, height) = (
            (rect.width() * ppp).round() as u32,
            (rect.height() * ppp).round() as u32,
        );
        let primitives = ctx.tessellate(output.shapes.clone(), ppp);
        let background = ctx.global_style().visuals.panel_fill;
        self.paint(&primitives, ppp, width.max(1), height.max(1), background)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_rectangle_covers_its_pixels_and_nothing_else() {
        let ctx = egui::Context::default();
        let input = crate::headless_input(40.0, 30.0, 0.0);
        let mut output = ctx.run_ui(input, |ui| {
            ui.painter().rect_filled(
                egui::Rect::from_min_max(egui::pos2(10.0, 10.0), egui::pos2(20.0, 20.0)),
                0.0,
                egui::Color32::RED,
            );
        });
        let mut r = SoftRenderer::default();
        r.set_textures(&output.textures_delta);
        output.textures_delta.clear();
        let px = r.paint_frame(&ctx, &output);
        assert_eq!((px.width, px.height), (40, 30));
        let at = |x: usize, y: usize| &px.rgba[(y * 40 + x) * 4..(y * 40 + x) * 4 + 4];
        assert_eq!(at(15, 15), &[255, 0, 0, 255]);
        assert_ne!(at(5, 5)[..3], [255, 0, 0]);
        assert_ne!(at(25, 15)[..3], [255, 0, 0]);
    }
}
