//! The built-in synthetic "shapes" data set: procedural images of one or two coloured shapes
//! with sizes and a spatial relation, and their captions ("a small red circle above a large blue
//! square"). Deterministic by seed and index, any resolution, any size, no files.
//!
//! Next to it, the oracle scorer that reads a generated image back (colours, shapes, sizes,
//! relation) and scores prompt adherence per attribute: the demo's stand-in for the CLIP score.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Palette: name and sRGB colour. Distinct enough to classify pixels by the nearest colour.
pub const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 40, 40]),
    ("green", [40, 170, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [235, 210, 40]),
    ("purple", [150, 60, 190]),
    ("orange", [245, 140, 30]),
];

/// The background colour (light grey).
pub const BACKGROUND: [u8; 3] = [235, 235, 235];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Large,
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// Half-extent as a fraction of the image side.
    fn half_extent(self) -> f64 {
        match self {
            Size::Small => 0.12,
            Size::Large => 0.2,
        }
    }
}

/// Where the first object is relative to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    Above,
    Below,
    LeftOf,
    RightOf,
}

impl Relation {
    pub const ALL: [Relation; 4] = [
        Relation::Above,
        Relation::Below,
        Relation::LeftOf,
        Relation::RightOf,
    ];
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::Above => "above",
            Relation::Below => "below",
            Relation::LeftOf => "left of",
            Relation::RightOf => "right of",
        }
    }
}

/// One object of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Object {
    pub colour: usize,
    pub shape: Shape,
    pub size: Size,
    /// Centre in [0, 1] image coordinates (x right, y down).
    pub cx: f64,
    pub cy: f64,
}

impl Object {
    fn phrase(&self) -> String {
        format!(
            "a {} {} {}",
            self.size.name(),
            COLOURS[self.colour].0,
            self.shape.name()
        )
    }

    /// Whether the pixel centre `(x, y)` (image coordinates in [0, 1]) is inside.
    fn contains(&self, x: f64, y: f64) -> bool {
        let h = self.size.half_extent();
        let (dx, dy) = (x - self.cx, y - self.cy);
        match self.shape {
            Shape::Circle => dx * dx + dy * dy <= h * h,
            Shape::Square => dx.abs() <= h * 0.886 && dy.abs() <= h * 0.886,
            // Upward triangle inscribed in the square of half-extent h.
            Shape::Triangle => dy <= h && dy >= -h && dx.abs() <= (dy + h) / 2.0,
        }
    }
}

/// A scene: one object, or two with a relation (the first relative to the second).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scene {
    pub objects: Vec<Object>,
    pub relation: Option<Relation>,
}

impl Scene {
    /// The caption, e.g. "a small red circle above a large blue square".
    pub fn caption(&self) -> String {
        match (self.objects.as_slice(), self.relation) {
            ([a, b], Some(r)) => format!("{} {} {}", a.phrase(), r.phrase(), b.phrase()),
            (objects, _) => objects
                .iter()
                .map(Object::phrase)
                .collect::<Vec<_>>()
                .join(" and "),
        }
    }

    /// Renders `[3, size, size]` values in [-1, 1] (channel-major), with 2x2 supersampling.
    pub fn render(&self, size: usize) -> Vec<f32> {
        let mut out = vec![0f32; 3 * size * size];
        for py in 0..size {
            for px in 0..size {
                let mut acc = [0f64; 3];
                for (sx, sy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                    let (x, y) = (
                        (px as f64 + sx) / size as f64,
                        (py as f64 + sy) / size as f64,
                    );
                    // Later objects are drawn on top.
                    let rgb = self
                        .objects
                        .iter()
                        .rev()
                        .find(|o| o.contains(x, y))
                        .map_or(BACKGROUND, |o| COLOURS[o.colour].1);
                    for c in 0..3 {
                        acc[c] += rgb[c] as f64 / 4.0;
                    }
                }
                for c in 0..3 {
                    out[(c * size + py) * size + px] = (acc[c] / 127.5 - 1.0) as f32;
                }
            }
        }
        out
    }
}

/// The shapes data set: item `i` of seed `s` is always the same scene.
#[derive(Debug, Clone)]
pub struct ShapesDataset {
    pub seed: u64,
    pub len: usize,
    /// Fraction of two-object scenes.
    pub two_objects: f64,
}

impl ShapesDataset {
    pub fn new(seed: u64, len: usize) -> Self {
        Self {
            seed,
            len,
            two_objects: 0.7,
        }
    }

    /// `n` held-out scenes for a training set of seed `seed`: a data seed training never uses.
    pub fn held_out(seed: u64, n: usize) -> Self {
        Self::new(seed ^ 0xE7A1_5EED, n)
    }

    /// The scene of item `index`.
    pub fn scene(&self, index: usize) -> Scene {
        let mut rng =
            ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
        let object = |rng: &mut ChaCha8Rng, exclude: Option<usize>| {
            let colour = loop {
                let c = rng.random_range(0..COLOURS.len());
                if Some(c) != exclude {
                    break c;
                }
            };
            Object {
                colour,
                shape: Shape::ALL[rng.random_range(0..3)],
                size: if rng.random_bool(0.5) {
                    Size::Small
                } else {
                    Size::Large
                },
                cx: 0.5,
                cy: 0.5,
            }
        };
        if !rng.random_bool(self.two_objects) {
            let mut a = object(&mut rng, None);
            let h = a.size.half_extent();
            a.cx = rng.random_range(h + 0.03..1.0 - h - 0.03);
            a.cy = rng.random_range(h + 0.03..1.0 - h - 0.03);
            return Scene {
                objects: vec![a],
                relation: None,
            };
        }
        let mut a = object(&mut rng, None);
        let mut b = object(&mut rng, Some(a.colour));
        let relation = Relation::ALL[rng.random_range(0..4)];
        // Along the relation's axis the two objects sit in opposite halves; across it they are
        // jittered a little around the centre.
        let (first, second) = (0.27, 0.73);
        let along = |o: &Object, rng: &mut ChaCha8Rng, centre: f64| {
            let h = o.size.half_extent();
            (centre + rng.random_range(-0.03..0.03)).clamp(h + 0.02, 1.0 - h - 0.02)
        };
        let across = |o: &Object, rng: &mut ChaCha8Rng| {
            let h = o.size.half_extent();
            rng.random_range(0.5 - (0.45 - h).max(0.0) * 0.5..0.5 + (0.45 - h).max(0.0) * 0.5)
        };
        let (pa, pb) = match relation {
            Relation::Above | Relation::LeftOf => (first, second),
            Relation::Below | Relation::RightOf => (second, first),
        };
        match relation {
            Relation::Above | Relation::Below => {
                a.cy = along(&a, &mut rng, pa);
                b.cy = along(&b, &mut rng, pb);
                a.cx = across(&a, &mut rng);
                b.cx = across(&b, &mut rng);
            }
            Relation::LeftOf | Relation::RightOf => {
                a.cx = along(&a, &mut rng, pa);
                b.cx = along(&b, &mut rng, pb);
                a.cy = across(&a, &mut rng);
                b.cy = across(&b, &mut rng);
            }
        }
        Scene {
            objects: vec![a, b],
            relation: Some(relation),
        }
    }

    /// `(image [3, size, size] in [-1, 1], caption)` of item `index`.
    pub fn item(&self, index: usize, size: usize) -> (Vec<f32>, String) {
        let scene = self.scene(index);
        (scene.render(size), scene.caption())
    }
}

/// What the oracle read from an image for one prompted object, and how well it matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Adherence {
    /// Fraction of prompted objects whose colour is present.
    pub colour: f64,
    /// Of those, fraction with the right shape.
    pub shape: f64,
    /// Of those, fraction with the right size.
    pub size: f64,
    /// Two-object prompts whose relation holds (`None` for one-object prompts).
    pub relation: Option<f64>,
    /// Mean of the attribute scores.
    pub overall: f64,
}

/// Mean, SE and count of values. The oracle summarises with it the per-image difference
/// `adherence - chance` (each image scored against its own prompt and against another scene's):
/// the uncertainty of an evaluation over its prompts; the live CKA its seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    pub mean: f64,
    /// Standard error over images (sample sd / sqrt(n)); 0 for one image.
    pub se: f64,
    pub n: usize,
}

impl Margin {
    pub fn of(diffs: &[f64]) -> Self {
        let n = diffs.len();
        let mean = diffs.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            se: (var / n.max(1) as f64).sqrt(),
            n,
        }
    }
}

/// A colour blob found in an image.
#[derive(Debug, Clone, Copy)]
struct Blob {
    area: f64,
    cx: f64,
    cy: f64,
    fill: f64,
    top_heavy: f64,
}

/// Pixels farther than this (RGB distance) from every palette colour and the background belong
/// to no colour: noise and blends are not evidence of a shape.
const COLOUR_TOLERANCE: f64 = 70.0;

/// The palette index of each pixel (`None` for background or no colour).
fn classify_pixels(image: &[f32], size: usize) -> Vec<Option<usize>> {
    (0..size * size)
        .map(|p| {
            let rgb = [0, 1, 2].map(|c| (image[c * size * size + p] as f64 + 1.0) * 127.5);
            let d = |c: [u8; 3]| {
                (0..3)
                    .map(|k| (rgb[k] - c[k] as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            };
            let mut best = (d(BACKGROUND), None);
            for (i, (_, c)) in COLOURS.iter().enumerate() {
                let v = d(*c);
                if v < best.0 {
                    best = (v, Some(i));
                }
            }
            if best.0 <= COLOUR_TOLERANCE {
                best.1
            } else {
                None
            }
        })
        .collect()
}

/// The largest 4-connected region of one palette colour: area (fraction of the image), centroid,
/// bounding-box fill ratio and the fraction of its pixels in the upper half of its box
/// (triangles are bottom-heavy). `None` when the region is smaller than half a small shape.
fn blob(labels: &[Option<usize>], size: usize, colour: usize) -> Option<Blob> {
    let mut seen = vec![false; size * size];
    let mut best: Vec<usize> = Vec::new();
    for startp in 0..size * size {
        if seen[startp] || labels[startp] != Some(colour) {
            continue;
        }
        let mut region = vec![startp];
        seen[startp] = true;
        let mut k = 0;
        while k < region.len() {
            let p = region[k];
            k += 1;
            let (x, y) = (p % size, p / size);
            let mut push = |q: usize| {
                if !seen[q] && labels[q] == Some(colour) {
                    seen[q] = true;
                    region.push(q);
                }
            };
            if x > 0 {
                push(p - 1);
            }
            if x + 1 < size {
                push(p + 1);
            }
            if y > 0 {
                push(p - size);
            }
            if y + 1 < size {
                push(p + size);
            }
        }
        if region.len() > best.len() {
            best = region;
        }
    }
    let small = Size::Small.half_extent() * size as f64;
    let min_area = 0.5 * 2.0 * small * small; // half of a small triangle, the smallest shape
    if (best.len() as f64) < min_area.max(3.0) {
        return None;
    }
    let n = best.len() as f64;
    let (mut sx, mut sy) = (0f64, 0f64);
    let (mut x0, mut x1, mut y0, mut y1) = (size, 0, size, 0);
    for &p in &best {
        let (x, y) = (p % size, p / size);
        sx += x as f64;
        sy += y as f64;
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let (w, h) = ((x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64);
    let mid = (y0 + y1) as f64 / 2.0;
    let top = best.iter().filter(|&&p| ((p / size) as f64) < mid).count() as f64;
    Some(Blob {
        area: n / (size * size) as f64,
        cx: sx / n / size as f64,
        cy: sy / n / size as f64,
        fill: n / (w * h),
        top_heavy: top / n,
    })
}

fn classify_shape(b: &Blob) -> Shape {
    if b.fill > 0.9 {
        Shape::Square
    } else if b.fill < 0.65 || b.top_heavy < 0.4 {
        Shape::Triangle
    } else {
        Shape::Circle
    }
}

fn classify_size(b: &Blob, shape: Shape) -> Size {
    // Areas of the two sizes for each shape (fractions of the image): small/large threshold at
    // the geometric mean.
    let h = |s: Size| s.half_extent();
    let area = |s: Size| match shape {
        Shape::Circle => std::f64::consts::PI * h(s) * h(s),
        Shape::Square => (2.0 * 0.886 * h(s)).powi(2),
        Shape::Triangle => 2.0 * h(s) * h(s),
    };
    if b.area < (area(Size::Small) * area(Size::Large)).sqrt() {
        Size::Small
    } else {
        Size::Large
    }
}

/// Scores how well `image` (`[3, size, size]` in [-1, 1]) shows `scene`.
pub fn score(scene: &Scene, image: &[f32], size: usize) -> Adherence {
    let labels = classify_pixels(image, size);
    let blobs: Vec<Option<Blob>> = scene
        .objects
        .iter()
        .map(|o| blob(&labels, size, o.colour))
        .collect();
    let n = scene.objects.len() as f64;
    let found = blobs.iter().filter(|b| b.is_some()).count() as f64;
    let (mut shape_ok, mut size_ok) = (0.0, 0.0);
    for (o, b) in scene.objects.iter().zip(&blobs) {
        if let Some(b) = b {
            let shape = classify_shape(b);
            if shape == o.shape {
                shape_ok += 1.0;
            }
            if classify_size(b, o.shape) == o.size {
                size_ok += 1.0;
            }
        }
    }
    let relation = scene.relation.map(|r| match (&blobs[0], &blobs[1]) {
        (Some(a), Some(b)) => {
            let holds = match r {
                Relation::Above => a.cy < b.cy,
                Relation::Below => a.cy > b.cy,
                Relation::LeftOf => a.cx < b.cx,
                Relation::RightOf => a.cx > b.cx,
            };
            f64::from(u8::from(holds))
        }
        _ => 0.0,
    });
    let colour = found / n;
    let shape = shape_ok / n;
    let size_score = size_ok / n;
    let mut parts = vec![colour, shape, size_score];
    parts.extend(relation);
    Adherence {
        colour,
        shape,
        size: size_score,
        relation,
        overall: parts.iter().sum::<f64>() / parts.len() as f64,
    }
}

/// Mean adherence over many (scene, image) pairs.
pub fn mean_adherence(scores: &[Adherence]) -> Adherence {
    let n = scores.len().max(1) as f64;
    let rel: Vec<f64> = scores.iter().filter_map(|s| s.relation).collect();
    Adherence {
        colour: scores.iter().map(|s| s.colour).sum::<f64>() / n,
        shape: scores.iter().map(|s| s.shape).sum::<f64>() / n,
        size: scores.iter().map(|s| s.size).sum::<f64>() / n,
        relation: (!rel.is_empty()).then(|| rel.iter().sum::<f64>() / rel.len() as f64),
        overall: scores.iter().map(|s| s.overall).sum::<f64>() / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_deterministic_and_captions_describe_the_scene() {
        let d = ShapesDataset::new(7, 1000);
        assert_eq!(d.item(42, 32), d.item(42, 32));
        assert_ne!(d.item(42, 32).1, d.item(43, 32).1);
        let other_seed = ShapesDataset::new(8, 1000);
        assert_ne!(d.scene(42), other_seed.scene(42));
        let mut two = 0;
        for i in 0..200 {
            let s = d.scene(i);
            let cap = s.caption();
            for o in &s.objects {
                assert!(
                    cap.contains(COLOURS[o.colour].0) && cap.contains(o.shape.name()),
                    "{cap}"
                );
            }
            if let Some(r) = s.relation {
                two += 1;
                assert!(cap.contains(r.phrase()));
                assert_ne!(s.objects[0].colour, s.objects[1].colour);
            }
            let img = s.render(32);
            assert_eq!(img.len(), 3 * 32 * 32);
            assert!(img.iter().all(|v| (-1.0..=1.0).contains(v)));
        }
        assert!((100..180).contains(&two), "{two} two-object scenes of 200");
    }

    #[test]
    fn the_oracle_reads_rendered_scenes_back() {
        let d = ShapesDataset::new(1, 400);
        for size in [32usize, 64] {
            let scores: Vec<Adherence> = (0..400)
                .map(|i| {
                    let s = d.scene(i);
                    score(&s, &s.render(size), size)
                })
                .collect();
            let m = mean_adherence(&scores);
            println!("rendered, {size}px: {m:?}");
            assert_eq!(m.colour, 1.0, "size {size}");
            assert!(m.relation.unwrap() > 0.99, "size {size}: {m:?}");
            assert!(m.shape > 0.9 && m.size > 0.9, "size {size}: {m:?}");
        }
    }

    #[test]
    fn the_oracle_scores_mismatched_and_blank_images_low() {
        let d = ShapesDataset::new(2, 300);
        let blank = vec![BACKGROUND[0] as f32 / 127.5 - 1.0; 3 * 32 * 32];
        let mut blank_scores = Vec::new();
        let mut swapped = Vec::new();
        for i in 0..300 {
            let s = d.scene(i);
            blank_scores.push(score(&s, &blank, 32));
            // Another scene's image for this prompt.
            swapped.push(score(&s, &d.scene(i + 1000).render(32), 32));
        }
        assert_eq!(mean_adherence(&blank_scores).overall, 0.0);
        let m = mean_adherence(&swapped);
        println!("another scene's image: {m:?}");
        assert!(m.overall < 0.5, "{m:?}");
        // Noise finds no shapes: every colour is somewhere in it, but not as a region.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let noise: Vec<f32> = (0..3 * 32 * 32)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let m = mean_adherence(
            &(0..50)
                .map(|i| score(&d.scene(i), &noise, 32))
                .collect::<Vec<_>>(),
        );
        println!("uniform noise: {m:?}");
        assert!(m.colour < 0.1, "{m:?}");
    }
}
