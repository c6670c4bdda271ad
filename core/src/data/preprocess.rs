//! Image preprocessing shared by the file-based sources: decode PNG/JPEG/WebP bytes, flatten
//! alpha over white, centre-crop to the largest centred square, resize to `size` x `size`, and
//! lay the result out channel-major in [-1, 1].
//!
//! The pipeline is crop-then-resize with [`FilterType::Triangle`] (bilinear, with the filter
//! widened by the scale factor when shrinking, i.e. antialiased like PIL's `BILINEAR`). It is
//! close to, but **not pixel-identical with**, torchvision's `Resize(size) + CenterCrop(size)` on
//! PIL images: PIL resizes the short side first and rounds the crop offset differently, and its
//! resampling kernels use their own fixed-point arithmetic. Expect differences of a few 8-bit
//! levels at edges; flat regions come out identical.

use image::imageops::{self, FilterType};
use image::{DynamicImage, RgbImage};

/// The resampling filter used by [`decode_image`].
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// The largest image [`decode_image`] decodes: 36 megapixels (6000 x 6000). Larger ones (a
/// decompression bomb: a 50 KB PNG can hold 20000 x 20000 pixels) are refused from their header
/// alone, so decoding one item never needs more than about 0.6 GB (a 16-bit RGBA decode buffer
/// of 288 MB, its RGB8 copy and the crop).
pub const MAX_PIXELS: u64 = 36_000_000;

/// Width and height from an encoded image's header (nothing decoded).
pub fn image_dimensions(bytes: &[u8]) -> Result<(u32, u32), String> {
    image::io::Reader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read the image header: {e}"))?
        .into_dimensions()
        .map_err(|e| format!("cannot decode image: {e}"))
}

/// An error unless a `w` x `h` image is within [`MAX_PIXELS`].
pub fn check_pixels(w: u32, h: u32) -> Result<(), String> {
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(format!(
            "image is {w}x{h} ({:.0} megapixels), more than the {} megapixels flowlens decodes (a decompression bomb, or a scan: downscale it first)",
            pixels as f64 / 1e6,
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

/// Decodes an encoded image (PNG, JPEG or WebP, sniffed from the bytes), centre-crops it to the
/// largest centred square, resizes it to `size` x `size` and returns `[3, size, size]` f32
/// values in [-1, 1] (`v / 127.5 - 1`), channel-major, sRGB as stored.
///
/// Transparent pixels are composited over white. Errors (as a message for the caller to attach
/// to the item's name): undecodable bytes, an image with a zero side, `size == 0`.
pub fn decode_image(bytes: &[u8], size: usize) -> Result<Vec<f32>, String> {
    if size == 0 {
        return Err("requested output size is 0".to_string());
    }
    let side = u32::try_from(size).map_err(|_| format!("output size {size} is too large"))?;
    let (w, h) = image_dimensions(bytes)?;
    check_pixels(w, h)?;
    let img = image::load_from_memory(bytes).map_err(|e| format!("cannot decode image: {e}"))?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(format!("image is empty ({w}x{h})"));
    }
    let rgb = flatten_over_white(img);
    let square = centre_square(rgb);
    let resized = if square.width() == side && square.height() == side {
        square
    } else {
        imageops::resize(&square, side, side, RESIZE_FILTER)
    };
    Ok(to_channel_major(&resized))
}

/// RGB8 of the image, alpha (if any) composited over a white background.
fn flatten_over_white(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let a = u32::from(a);
        let over = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([over(r), over(g), over(b)])
    })
}

/// The largest centred square of the image (offsets rounded down).
fn centre_square(img: RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let (x, y) = ((w - side) / 2, (h - side) / 2);
    if side == w && side == h {
        return img;
    }
    imageops::crop_imm(&img, x, y, side, side).to_image()
}

/// `[3, h, w]` f32 in [-1, 1] from an RGB8 image.
fn to_channel_major(img: &RgbImage) -> Vec<f32> {
    let plane = (img.width() as usize) * (img.height() as usize);
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(px.0[c]) / 127.5 - 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageOutputFormat::Png)
            .expect("encode png");
        buf.into_inner()
    }

    #[test]
    fn solid_colour_maps_to_expected_range() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(5, 3, image::Rgb([255, 0, 51])));
        let px = decode_image(&png(&img), 4).expect("decode");
        assert_eq!(px.len(), 3 * 16);
        assert!(px[..16].iter().all(|&v| (v - 1.0).abs() < 1e-6));
        assert!(px[16..32].iter().all(|&v| (v + 1.0).abs() < 1e-6));
        assert!(
            px[32..]
                .iter()
                .all(|&v| (v - (51.0 / 127.5 - 1.0)).abs() < 1e-6)
        );
    }

    #[test]
    fn transparent_pixels_become_white() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            2,
            2,
            image::Rgba([0, 0, 0, 0]),
        ));
        let px = decode_image(&png(&img), 2).expect("decode");
        assert!(px.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{px:?}");
    }

    #[test]
    fn centre_crop_keeps_the_middle() {
        // 6x2: columns 0-1 red, 2-3 green, 4-5 blue; the centred 2x2 square is green.
        let img = RgbImage::from_fn(6, 2, |x, _| match x {
            0 | 1 => image::Rgb([255, 0, 0]),
            2 | 3 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let px = decode_image(&png(&DynamicImage::ImageRgb8(img)), 2).expect("decode");
        assert_eq!(&px[..4], &[-1.0; 4]);
        assert_eq!(&px[4..8], &[1.0; 4]);
        assert_eq!(&px[8..], &[-1.0; 4]);
    }

    #[test]
    fn garbage_and_zero_size_are_errors() {
        assert!(
            decode_image(b"not an image", 8)
                .unwrap_err()
                .contains("cannot decode")
        );
        let img = DynamicImage::ImageRgb8(RgbImage::new(2, 2));
        assert!(decode_image(&png(&img), 0).is_err());
    }
}
