//! The file-based data sources (image folder, parquet, webdataset shards) on fixtures written at
//! test time: known colours through decode + centre crop + resize, captions, per-item errors that
//! name the item, open errors, fingerprints, and the command-line syntax.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use flowlens_core::data::{
    DataError, DataSource, Dataset, ImageFolder, ParquetSource, SHAPES_DEFAULT_LEN,
    SHAPES_DEFAULT_SEED, WebDataset, decode_image,
};
use image::{DynamicImage, ImageOutputFormat, Rgb, RgbImage};
use polars::prelude::*;

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const GREEN: [u8; 3] = [0, 255, 0];
/// Output side used by the checks.
const S: usize = 8;
/// Tolerance in [-1, 1] units (2/255 per 8-bit level): lossless PNG, and JPEG at quality 95.
const PNG_TOL: f32 = 0.02;
const JPEG_TOL: f32 = 0.12;

/// A 40x24 (or scaled) image whose centred square is red on the left half and blue on the
/// right, and whose margins (cut away by the centre crop) are green. A source that squashed
/// instead of cropping, or cropped off-centre, would show green or the wrong colour.
fn margins_image(scale: u32) -> RgbImage {
    let (w, h) = (40 * scale, 24 * scale);
    RgbImage::from_fn(w, h, |x, _| {
        let x = x / scale;
        Rgb(if !(8..32).contains(&x) {
            GREEN
        } else if x < 20 {
            RED
        } else {
            BLUE
        })
    })
}

fn encode(img: &RgbImage, format: ImageOutputFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut buf, format)
        .expect("encode fixture image");
    buf.into_inner()
}

fn png_bytes() -> Vec<u8> {
    encode(&margins_image(1), ImageOutputFormat::Png)
}

fn jpeg_bytes() -> Vec<u8> {
    encode(&margins_image(2), ImageOutputFormat::Jpeg(95))
}

/// A solid-colour PNG (for items whose colour identifies them).
fn solid_png(rgb: [u8; 3], w: u32, h: u32) -> Vec<u8> {
    encode(
        &RgbImage::from_pixel(w, h, Rgb(rgb)),
        ImageOutputFormat::Png,
    )
}

/// Deterministic junk that no image decoder accepts.
fn junk_bytes() -> Vec<u8> {
    let mut x = 0x1234_5678u32;
    (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn level(v: u8) -> f32 {
    f32::from(v) / 127.5 - 1.0
}

/// Pixel (channel c, row y, column x) of a `[3, S, S]` image.
fn px(pixels: &[f32], c: usize, y: usize, x: usize) -> f32 {
    pixels[c * S * S + y * S + x]
}

/// Checks the crop of [`margins_image`]: columns 0..3 red, 5..8 blue, nowhere green.
fn assert_red_blue(pixels: &[f32], tol: f32, what: &str) {
    assert_eq!(pixels.len(), 3 * S * S, "{what}: length");
    assert!(
        pixels.iter().all(|v| (-1.0..=1.0).contains(v)),
        "{what}: values outside [-1, 1]"
    );
    for y in 0..S {
        for x in 0..S {
            let rgb = [0, 1, 2].map(|c| px(pixels, c, y, x));
            assert!(
                (rgb[1] - level(0)).abs() <= tol,
                "{what}: green at ({x}, {y}): {rgb:?}: the margins were not cropped away"
            );
            let want = match x {
                0..=2 => RED,
                5..=7 => BLUE,
                _ => continue,
            };
            for c in 0..3 {
                assert!(
                    (rgb[c] - level(want[c])).abs() <= tol,
                    "{what}: pixel ({x}, {y}) is {rgb:?}, want {want:?}"
                );
            }
        }
    }
}

fn assert_solid(pixels: &[f32], rgb: [u8; 3], tol: f32, what: &str) {
    assert_eq!(pixels.len(), 3 * S * S, "{what}: length");
    for c in 0..3 {
        for v in &pixels[c * S * S..(c + 1) * S * S] {
            assert!(
                (v - level(rgb[c])).abs() <= tol,
                "{what}: channel {c} is {v}, want {rgb:?}"
            );
        }
    }
}

/// The item name and reason of an `Item` error (panics on anything else).
fn item_error(r: Result<flowlens_core::data::Example, DataError>) -> (String, String) {
    match r {
        Err(DataError::Item { item, reason }) => (item, reason),
        Err(other) => panic!("expected an Item error, got {other}"),
        Ok(ex) => panic!(
            "expected an Item error, got an example captioned {:?}",
            ex.caption
        ),
    }
}

fn open_error<T>(r: Result<T, DataError>) -> (String, String) {
    match r {
        Err(DataError::Open { path, reason }) => (path, reason),
        Err(other) => panic!("expected an Open error, got {other}"),
        Ok(_) => panic!("expected an Open error, got a data set"),
    }
}

fn empty_error<T>(r: Result<T, DataError>) -> String {
    match r {
        Err(e @ DataError::Empty { .. }) => e.to_string(),
        Err(other) => panic!("expected an Empty error, got {other}"),
        Ok(_) => panic!("expected an Empty error, got a data set"),
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    fs::write(path, bytes).expect("write fixture");
}

// ---------------------------------------------------------------------------------------------
// decode_image

#[test]
fn decode_crops_the_centre_and_resizes() {
    assert_red_blue(&decode_image(&png_bytes(), S).expect("png"), PNG_TOL, "png");
    assert_red_blue(
        &decode_image(&jpeg_bytes(), S).expect("jpeg"),
        JPEG_TOL,
        "jpeg",
    );
    // A tall image is cropped vertically: a 24x40 image, green top and bottom 8 rows.
    let tall = RgbImage::from_fn(24, 40, |_, y| {
        Rgb(if (8..32).contains(&y) { RED } else { GREEN })
    });
    let pixels = decode_image(&encode(&tall, ImageOutputFormat::Png), S).expect("tall");
    assert_solid(&pixels, RED, PNG_TOL, "tall");
    // Upscaling works too.
    let pixels = decode_image(&solid_png(BLUE, 3, 2), S).expect("small");
    assert_solid(&pixels, BLUE, PNG_TOL, "small");
}

#[test]
fn decode_rejects_junk_with_a_message() {
    let err = decode_image(&junk_bytes(), S).expect_err("junk must not decode");
    assert!(err.contains("decode"), "{err}");
    assert!(decode_image(&[], S).is_err());
    assert!(decode_image(&png_bytes(), 0).is_err());
}

// ---------------------------------------------------------------------------------------------
// Image folder

/// root/a/red_blue.png (+ caption with surrounding blanks), root/b.JPG (+ caption),
/// root/c_corrupt.png (junk, + caption), root/d_nocaption.png (no sidecar), plus files that must
/// be ignored: a hidden image, a markdown file, a lone caption.
fn folder_fixture(root: &Path) {
    write(&root.join("a/red_blue.png"), &png_bytes());
    write(&root.join("a/red_blue.txt"), b"  a red and blue picture \n");
    write(&root.join("b.JPG"), &jpeg_bytes());
    write(&root.join("b.txt"), b"a jpeg");
    write(&root.join("c_corrupt.png"), &junk_bytes());
    write(&root.join("c_corrupt.txt"), b"never seen");
    write(&root.join("d_nocaption.png"), &solid_png(RED, 4, 4));
    write(&root.join(".hidden.png"), &png_bytes());
    write(&root.join(".hidden.txt"), b"hidden");
    write(&root.join("notes.md"), b"# notes");
    write(&root.join("lonely.txt"), b"a caption without an image");
}

#[test]
fn folder_reads_images_captions_and_reports_bad_items() {
    let dir = tempfile::tempdir().expect("tempdir");
    folder_fixture(dir.path());
    let ds = ImageFolder::open(dir.path()).expect("open folder");
    assert_eq!(ds.len(), 4, "{:?}", ds.images());

    let ex = ds.get(0, S).expect("png item");
    assert_eq!(ex.caption, "a red and blue picture");
    assert_red_blue(&ex.pixels, PNG_TOL, "folder png");

    let ex = ds.get(1, S).expect("jpeg item (upper-case extension)");
    assert_eq!(ex.caption, "a jpeg");
    assert_red_blue(&ex.pixels, JPEG_TOL, "folder jpeg");

    let (item, reason) = item_error(ds.get(2, S));
    assert!(item.ends_with("c_corrupt.png"), "{item}");
    assert!(reason.contains("decode"), "{reason}");

    let (item, reason) = item_error(ds.get(3, S));
    assert!(item.ends_with("d_nocaption.png"), "{item}");
    assert!(reason.contains("d_nocaption.txt"), "{reason}");

    let (_, reason) = item_error(ds.get(4, S));
    assert!(reason.contains("out of range"), "{reason}");

    // Deterministic: the same index gives the same example.
    assert_eq!(ds.get(0, S).expect("again"), ds.get(0, S).expect("again"));
}

#[test]
fn folder_open_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let (path, _) = open_error(ImageFolder::open(&missing));
    assert!(path.ends_with("missing"), "{path}");

    let file = dir.path().join("file.png");
    write(&file, &png_bytes());
    let (_, reason) = open_error(ImageFolder::open(&file));
    assert!(reason.contains("not a folder"), "{reason}");

    let empty = dir.path().join("empty");
    write(&empty.join("only_a_caption.txt"), b"hello");
    write(&empty.join("sub/.hidden.png"), &png_bytes());
    let msg = empty_error(ImageFolder::open(&empty));
    assert!(msg.contains(".png") && msg.contains(".txt"), "{msg}");
}

#[test]
fn folder_fingerprint_tracks_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    folder_fixture(dir.path());
    let fp = ImageFolder::open(dir.path()).expect("open").fingerprint();
    assert!(fp.starts_with("folder:"), "{fp}");
    assert_eq!(
        ImageFolder::open(dir.path()).expect("open").fingerprint(),
        fp
    );

    // A caption edit shows.
    write(&dir.path().join("b.txt"), b"a different caption");
    let fp2 = ImageFolder::open(dir.path()).expect("open").fingerprint();
    assert_ne!(fp2, fp);
    // So does a new sidecar for a captionless image, and a new image.
    write(&dir.path().join("d_nocaption.txt"), b"now captioned");
    let fp3 = ImageFolder::open(dir.path()).expect("open").fingerprint();
    assert_ne!(fp3, fp2);
    write(&dir.path().join("e.png"), &png_bytes());
    let fp4 = ImageFolder::open(dir.path()).expect("open").fingerprint();
    assert_ne!(fp4, fp3);
    // Ignored files do not.
    write(&dir.path().join("notes.md"), b"# other notes");
    assert_eq!(
        ImageFolder::open(dir.path()).expect("open").fingerprint(),
        fp4
    );
}

// ---------------------------------------------------------------------------------------------
// Parquet

fn write_parquet(path: &Path, mut df: DataFrame) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    let f = fs::File::create(path).expect("create parquet");
    ParquetWriter::new(f)
        .finish(&mut df)
        .expect("write parquet");
}

/// A Hugging Face `datasets`-style export: `image` is a struct {bytes, path}, captions in `text`
/// (the second default name), an extra `id` column. Row 1 has null bytes (image by path only),
/// row 2 junk bytes, row 3 a null caption, row 4 a null struct.
fn hf_frame() -> DataFrame {
    let png = png_bytes();
    let jpeg = jpeg_bytes();
    let junk = junk_bytes();
    let bytes = Series::new(
        "bytes".into(),
        [Some(&png[..]), None, Some(&junk[..]), Some(&jpeg[..])],
    );
    let paths = Series::new(
        "path".into(),
        [Some("0.png"), Some("elsewhere/1.jpg"), Some("2.png"), None],
    );
    let mut image = StructChunked::from_series("image".into(), 4, [bytes, paths].iter())
        .expect("struct")
        .into_series();
    // Row 4: the struct itself is null.
    let null_row = Series::full_null("image".into(), 1, image.dtype());
    image.append(&null_row).expect("append null struct");
    let text = Series::new(
        "text".into(),
        [
            Some("hf zero"),
            Some("hf one"),
            Some("hf two"),
            None,
            Some("hf four"),
        ],
    );
    let id = Series::new("id".into(), [0i64, 1, 2, 3, 4]);
    DataFrame::new(5, vec![id.into(), image.into(), text.into()]).expect("frame")
}

/// A plain binary `jpg` column and a `caption` column, `n` rows of a solid colour; row `null_at`
/// has a null image.
fn plain_frame(rgb: [u8; 3], captions: &[&str], null_at: Option<usize>) -> DataFrame {
    let png = solid_png(rgb, 6, 5);
    let cells: Vec<Option<&[u8]>> = (0..captions.len())
        .map(|i| (Some(i) != null_at).then_some(&png[..]))
        .collect();
    let jpg = Series::new("jpg".into(), cells);
    let caption = Series::new("caption".into(), captions);
    DataFrame::new(captions.len(), vec![jpg.into(), caption.into()]).expect("frame")
}

#[test]
fn parquet_reads_hugging_face_image_structs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("train-00000-of-00001.parquet");
    write_parquet(&file, hf_frame());
    let ds = ParquetSource::open(&file, None, None).expect("open parquet");
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.image_column(), "image");
    assert_eq!(ds.caption_column(), "text");

    let ex = ds.get(0, S).expect("row 0");
    assert_eq!(ex.caption, "hf zero");
    assert_red_blue(&ex.pixels, PNG_TOL, "parquet png");

    let (item, reason) = item_error(ds.get(1, S));
    assert!(
        item.contains("train-00000-of-00001.parquet") && item.ends_with("row 1"),
        "{item}"
    );
    assert!(
        reason.contains("null") && reason.contains("elsewhere/1.jpg"),
        "{reason}"
    );

    let (item, reason) = item_error(ds.get(2, S));
    assert!(item.ends_with("row 2"), "{item}");
    assert!(reason.contains("decode"), "{reason}");

    let (item, reason) = item_error(ds.get(3, S));
    assert!(item.ends_with("row 3"), "{item}");
    assert!(
        reason.contains("caption") && reason.contains("null"),
        "{reason}"
    );

    let (item, reason) = item_error(ds.get(4, S));
    assert!(item.ends_with("row 4"), "{item}");
    assert!(
        reason.contains("image") && reason.contains("null"),
        "{reason}"
    );
}

#[test]
fn parquet_folder_of_plain_binary_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Written out of order: the source sorts by name.
    write_parquet(
        &dir.path().join("part-1.parquet"),
        plain_frame(BLUE, &["blue a", "blue b", "blue c"], Some(1)),
    );
    write_parquet(
        &dir.path().join("part-0.parquet"),
        plain_frame(RED, &["red a", "red b"], None),
    );
    write(&dir.path().join("README.md"), b"not parquet");
    let ds = ParquetSource::open(dir.path(), None, None).expect("open folder");
    assert_eq!(ds.files().len(), 2);
    assert_eq!(ds.len(), 5);
    assert_eq!((ds.image_column(), ds.caption_column()), ("jpg", "caption"));

    let captions: Vec<String> = [0, 1, 2, 4]
        .iter()
        .map(|&i| ds.get(i, S).expect("row").caption)
        .collect();
    assert_eq!(captions, ["red a", "red b", "blue a", "blue c"]);
    assert_solid(
        &ds.get(0, S).expect("row 0").pixels,
        RED,
        PNG_TOL,
        "red row",
    );
    assert_solid(
        &ds.get(4, S).expect("row 4").pixels,
        BLUE,
        PNG_TOL,
        "blue row",
    );

    let (item, reason) = item_error(ds.get(3, S));
    assert!(
        item.contains("part-1.parquet") && item.ends_with("row 1"),
        "{item}"
    );
    assert!(reason.contains("null"), "{reason}");

    // Explicit columns work the same.
    let ds = ParquetSource::open(dir.path(), Some("jpg"), Some("caption")).expect("explicit");
    assert_eq!(ds.len(), 5);
}

#[test]
fn parquet_open_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hf.parquet");
    write_parquet(&file, hf_frame());

    // A missing explicit column lists the columns that exist.
    let (path, reason) = open_error(ParquetSource::open(&file, Some("picture"), None));
    assert!(path.ends_with("hf.parquet"), "{path}");
    assert!(reason.contains("picture"), "{reason}");
    for col in ["id", "image", "text"] {
        assert!(reason.contains(col), "{reason}");
    }
    let (_, reason) = open_error(ParquetSource::open(&file, None, Some("alt")));
    assert!(
        reason.contains("alt") && reason.contains("image"),
        "{reason}"
    );

    // No default image column.
    let no_image = dir.path().join("no_image.parquet");
    let df = DataFrame::new(
        1,
        vec![
            Series::new("photo".into(), [&b"x"[..]]).into(),
            Series::new("caption".into(), ["c"]).into(),
        ],
    )
    .expect("frame");
    write_parquet(&no_image, df);
    let (_, reason) = open_error(ParquetSource::open(&no_image, None, None));
    assert!(
        reason.contains("photo") && reason.contains("image"),
        "{reason}"
    );

    // Wrong types: an integer image column, a binary caption column.
    let (_, reason) = open_error(ParquetSource::open(&file, Some("id"), None));
    assert!(reason.contains("binary"), "{reason}");
    let bad_caption = dir.path().join("bad_caption.parquet");
    let df = DataFrame::new(
        1,
        vec![
            Series::new("image".into(), [&png_bytes()[..]]).into(),
            Series::new("caption".into(), [&b"bytes"[..]]).into(),
        ],
    )
    .expect("frame");
    write_parquet(&bad_caption, df);
    let (_, reason) = open_error(ParquetSource::open(&bad_caption, None, None));
    assert!(reason.contains("string"), "{reason}");

    // Not parquet, missing, empty folder, no rows.
    let junk = dir.path().join("junk.parquet");
    write(&junk, &junk_bytes());
    let (path, _) = open_error(ParquetSource::open(&junk, None, None));
    assert!(path.ends_with("junk.parquet"), "{path}");
    open_error(ParquetSource::open(
        dir.path().join("missing.parquet"),
        None,
        None,
    ));
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    let msg = empty_error(ParquetSource::open(&empty, None, None));
    assert!(msg.contains(".parquet"), "{msg}");
    let no_rows = dir.path().join("no_rows.parquet");
    write_parquet(&no_rows, plain_frame(RED, &[], None));
    empty_error(ParquetSource::open(&no_rows, None, None));
}

#[test]
fn parquet_fingerprint_tracks_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("d.parquet");
    write_parquet(&file, plain_frame(RED, &["one", "two"], None));
    let fp = ParquetSource::open(&file, None, None)
        .expect("open")
        .fingerprint();
    assert!(fp.starts_with("parquet:"), "{fp}");
    assert_eq!(
        ParquetSource::open(&file, None, None)
            .expect("open")
            .fingerprint(),
        fp
    );
    write_parquet(&file, plain_frame(RED, &["one", "two", "three"], None));
    assert_ne!(
        ParquetSource::open(&file, None, None)
            .expect("open")
            .fingerprint(),
        fp
    );
}

// ---------------------------------------------------------------------------------------------
// Webdataset

/// Appends a regular file member.
fn add_member(builder: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name, bytes)
        .expect("append tar member");
}

/// An img2dataset-style shard. Keys in order: 0 (jpg + txt), 1 (png + json caption),
/// 2 (txt only: dropped at open), 3 (corrupt jpg + txt), 4 (png, json without caption).
fn shard_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_member(&mut b, "00000000.jpg", &jpeg_bytes());
    add_member(&mut b, "00000000.txt", b" a jpeg in a shard\n");
    add_member(
        &mut b,
        "00000000.json",
        br#"{"caption": "not this one", "url": "x"}"#,
    );
    add_member(&mut b, "00000001.png", &png_bytes());
    add_member(
        &mut b,
        "00000001.json",
        br#"{"caption": "from json", "width": 40}"#,
    );
    add_member(&mut b, "00000002.txt", b"caption without image");
    add_member(&mut b, "00000003.jpg", &junk_bytes());
    add_member(&mut b, "00000003.txt", b"corrupt image");
    add_member(&mut b, "00000004.png", &solid_png(GREEN, 5, 5));
    add_member(&mut b, "00000004.json", br#"{"url": "no caption here"}"#);
    b.into_inner().expect("finish tar")
}

/// A second shard with one sample.
fn shard2_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_member(&mut b, "00000010.png", &solid_png(BLUE, 7, 9));
    add_member(&mut b, "00000010.txt", b"second shard");
    b.into_inner().expect("finish tar")
}

#[test]
fn webdataset_reads_a_shard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard = dir.path().join("00000.tar");
    write(&shard, &shard_bytes());
    let ds = WebDataset::open(shard.to_str().expect("utf-8 path")).expect("open shard");
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.skipped_at_open().0, 1);
    assert!(ds.problems().is_empty(), "{:?}", ds.problems());

    let ex = ds.get(0, S).expect("key 0");
    assert_eq!(ex.caption, "a jpeg in a shard", ".txt wins over .json");
    assert_red_blue(&ex.pixels, JPEG_TOL, "shard jpeg");

    let ex = ds.get(1, S).expect("key 1");
    assert_eq!(ex.caption, "from json");
    assert_red_blue(&ex.pixels, PNG_TOL, "shard png");

    let (item, reason) = item_error(ds.get(2, S));
    assert!(
        item.contains("00000.tar") && item.ends_with("00000003"),
        "{item}"
    );
    assert!(reason.contains("decode"), "{reason}");

    let (item, reason) = item_error(ds.get(3, S));
    assert!(item.ends_with("00000004"), "{item}");
    assert!(reason.contains("caption"), "{reason}");

    assert_eq!(ds.get(1, S).expect("again"), ds.get(1, S).expect("again"));
}

#[test]
fn webdataset_folder_and_brace_pattern() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(&dir.path().join("00001.tar"), &shard2_bytes());
    write(&dir.path().join("00000.tar"), &shard_bytes());
    write(&dir.path().join("notes.txt"), b"not a shard");

    let folder = WebDataset::open(dir.path().to_str().expect("utf-8")).expect("folder");
    assert_eq!(folder.shards().len(), 2);
    assert_eq!(folder.len(), 5);
    let last = folder.get(4, S).expect("second shard");
    assert_eq!(last.caption, "second shard");
    assert_solid(&last.pixels, BLUE, PNG_TOL, "second shard");

    let pattern = format!("{}/{{00000..00001}}.tar", dir.path().display());
    let braces = WebDataset::open(&pattern).expect("pattern");
    assert_eq!(braces.shards(), folder.shards());
    assert_eq!(braces.len(), 5);
    assert_eq!(
        braces.get(4, S).expect("second shard").caption,
        "second shard"
    );

    let too_many = format!("{}/{{00000..00002}}.tar", dir.path().display());
    let (path, _) = open_error(WebDataset::open(&too_many));
    assert!(path.ends_with("00002.tar"), "{path}");
}

#[test]
fn webdataset_damaged_and_empty_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = shard_bytes();

    // Cut inside the data of the corrupt key-3 image: keys 0 and 1 survive, key 3 loses its
    // image (runs past the end), the problem is recorded.
    let cut = {
        let needle = junk_bytes();
        let at = full
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("junk member in the shard");
        at + 10
    };
    let truncated = dir.path().join("truncated.tar");
    write(&truncated, &full[..cut]);
    let ds = WebDataset::open(truncated.to_str().expect("utf-8")).expect("truncated shard");
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.problems().len(), 1, "{:?}", ds.problems());
    assert!(
        ds.problems()[0].contains("truncated.tar"),
        "{:?}",
        ds.problems()
    );
    assert_eq!(ds.get(1, S).expect("key 1 survives").caption, "from json");
    // The loss is counted: key 2 (no image) and the unreadable tail of the shard.
    let (skipped, why) = ds.skipped_at_open();
    assert_eq!(skipped, 2, "{why:?}");
    assert!(why.iter().any(|w| w.contains("truncated")), "{why:?}");

    // Link members are dropped and counted, never silently.
    let mut b = tar::Builder::new(Vec::new());
    add_member(&mut b, "00000000.png", &solid_png(GREEN, 4, 4));
    add_member(&mut b, "00000000.txt", b"a real sample");
    for (kind, name) in [
        (tar::EntryType::Symlink, "00000001.png"),
        (tar::EntryType::Link, "00000002.png"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        b.append_link(&mut header, name, "00000000.png")
            .expect("link member");
    }
    let links = dir.path().join("links.tar");
    write(&links, &b.into_inner().expect("tar"));
    let ds = WebDataset::open(links.to_str().expect("utf-8")).expect("links shard");
    assert_eq!(ds.len(), 1);
    let (skipped, why) = ds.skipped_at_open();
    assert_eq!(skipped, 2, "{why:?}");
    assert!(why.iter().all(|w| w.contains("link member")), "{why:?}");

    // Cut inside the first header: nothing readable, an Open error naming the shard.
    let stub = dir.path().join("stub.tar");
    write(&stub, &full[..100]);
    let (path, _) = open_error(WebDataset::open(stub.to_str().expect("utf-8")));
    assert!(path.ends_with("stub.tar"), "{path}");

    // Not a tar file at all.
    let junk = dir.path().join("junk.tar");
    write(&junk, &junk_bytes().repeat(4));
    let (path, reason) = open_error(WebDataset::open(junk.to_str().expect("utf-8")));
    assert!(path.ends_with("junk.tar"), "{path}");
    assert!(reason.contains("tar"), "{reason}");

    // Captions only: nothing to train on.
    let mut b = tar::Builder::new(Vec::new());
    add_member(&mut b, "0.txt", b"a");
    add_member(&mut b, "1.txt", b"b");
    let only_text = dir.path().join("only_text.tar");
    write(&only_text, &b.into_inner().expect("tar"));
    let msg = empty_error(WebDataset::open(only_text.to_str().expect("utf-8")));
    assert!(msg.contains("image"), "{msg}");

    // Missing shard, empty folder.
    open_error(WebDataset::open(
        dir.path().join("missing.tar").to_str().expect("utf-8"),
    ));
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).expect("mkdir");
    empty_error(WebDataset::open(empty.to_str().expect("utf-8")));
}

#[test]
fn webdataset_fingerprint_tracks_shards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard = dir.path().join("00000.tar");
    write(&shard, &shard_bytes());
    let spec = shard.to_str().expect("utf-8");
    let fp = WebDataset::open(spec).expect("open").fingerprint();
    assert!(fp.starts_with("webdataset:"), "{fp}");
    assert_eq!(WebDataset::open(spec).expect("open").fingerprint(), fp);
    write(&shard, &shard2_bytes());
    assert_ne!(WebDataset::open(spec).expect("open").fingerprint(), fp);
}

// ---------------------------------------------------------------------------------------------
// DataSource: config and command line

#[test]
fn data_source_opens_every_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    folder_fixture(&dir.path().join("images"));
    write_parquet(&dir.path().join("table.parquet"), hf_frame());
    write(&dir.path().join("shards/00000.tar"), &shard_bytes());

    let sources = [
        (DataSource::Shapes { seed: 1, len: 3 }, 3),
        (
            DataSource::Folder {
                path: dir.path().join("images"),
            },
            4,
        ),
        (
            DataSource::Parquet {
                path: dir.path().join("table.parquet"),
                image_column: Some("image".into()),
                caption_column: None,
            },
            5,
        ),
        (
            DataSource::WebDataset {
                path: format!("{}/shards/{{00000..00000}}.tar", dir.path().display()),
            },
            4,
        ),
    ];
    for (source, len) in sources {
        let ds = source.open().unwrap_or_else(|e| panic!("{source:?}: {e}"));
        assert_eq!(ds.len(), len, "{source:?}");
        assert_eq!(ds.get(0, S).expect("item 0").pixels.len(), 3 * S * S);
    }
}

#[test]
fn data_source_config_syntax() {
    let src: DataSource =
        toml::from_str("kind = \"parquet\"\npath = \"data/train\"\ncaption_column = \"prompt\"\n")
            .expect("parquet config");
    assert_eq!(
        src,
        DataSource::Parquet {
            path: "data/train".into(),
            image_column: None,
            caption_column: Some("prompt".into()),
        }
    );
    let src: DataSource =
        toml::from_str("kind = \"webdataset\"\npath = \"s/{0..3}.tar\"\n").expect("webdataset");
    assert_eq!(
        src,
        DataSource::WebDataset {
            path: "s/{0..3}.tar".into()
        }
    );
    let src: DataSource = toml::from_str("kind = \"folder\"\npath = \"imgs\"\n").expect("folder");
    assert_eq!(
        src,
        DataSource::Folder {
            path: "imgs".into()
        }
    );
    assert!(toml::from_str::<DataSource>("kind = \"folder\"\npath = \"x\"\nlen = 3\n").is_err());
    assert!(toml::from_str::<DataSource>("kind = \"WebDataset\"\npath = \"x\"\n").is_err());
}

#[test]
fn parse_cli_prefixes_and_guesses() {
    let parse = DataSource::parse_cli;
    assert_eq!(
        parse("shapes"),
        Ok(DataSource::Shapes {
            seed: SHAPES_DEFAULT_SEED,
            len: SHAPES_DEFAULT_LEN
        })
    );
    assert_eq!(
        parse("shapes:7:100"),
        Ok(DataSource::Shapes { seed: 7, len: 100 })
    );
    for bad in [
        "",
        "shapes:7",
        "shapes:x:1",
        "shapes:1:0",
        "shapes:1:-3",
        "folder:",
        "parquet:",
    ] {
        assert!(parse(bad).is_err(), "{bad:?} must be rejected");
    }
    assert_eq!(
        parse("folder:a/b"),
        Ok(DataSource::Folder { path: "a/b".into() })
    );
    assert_eq!(
        parse("parquet:x"),
        Ok(DataSource::Parquet {
            path: "x".into(),
            image_column: None,
            caption_column: None
        })
    );
    assert_eq!(
        parse("webdataset:s/{0..9}.tar"),
        Ok(DataSource::WebDataset {
            path: "s/{0..9}.tar".into()
        })
    );

    // Bare paths: the kind is guessed from what is there.
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |p: &str| -> PathBuf { dir.path().join(p) };
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    write(&d("shards/000.tar"), &shard2_bytes());
    write(&d("tables/a.parquet"), b"not checked here");
    write(&d("images/x.png"), &png_bytes());
    write(&d("other.bin"), b"?");
    assert_eq!(
        parse(&s(&d("shards"))),
        Ok(DataSource::WebDataset {
            path: s(&d("shards"))
        })
    );
    assert_eq!(
        parse(&s(&d("shards/000.tar"))),
        Ok(DataSource::WebDataset {
            path: s(&d("shards/000.tar"))
        })
    );
    let parquet = |p: PathBuf| DataSource::Parquet {
        path: p,
        image_column: None,
        caption_column: None,
    };
    assert_eq!(parse(&s(&d("tables"))), Ok(parquet(d("tables"))));
    assert_eq!(
        parse(&s(&d("tables/a.parquet"))),
        Ok(parquet(d("tables/a.parquet")))
    );
    assert_eq!(
        parse(&s(&d("images"))),
        Ok(DataSource::Folder { path: d("images") })
    );
    let pattern = format!("{}/{{000..003}}.tar", s(&d("shards")));
    assert_eq!(
        parse(&pattern),
        Ok(DataSource::WebDataset {
            path: pattern.clone()
        })
    );
    let err = parse(&s(&d("missing"))).expect_err("missing path");
    assert!(err.contains("no such file"), "{err}");
    let err = parse(&s(&d("other.bin"))).expect_err("unknown file kind");
    assert!(err.contains("parquet") && err.contains("tar"), "{err}");
}
