//! Inputs far larger than their files are refused before they are allocated: a decompression
//! bomb (a PNG of tens of KB that decodes to 144 megapixels) costs its header, not its pixels.
//! One test in its own binary, so that the process's peak memory is this test's.

use flowlens_core::data::preprocess::{MAX_PIXELS, decode_image};

/// A `side` x `side` 1-bit PNG written row by row (little memory to make).
fn bomb(side: u32) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.png");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut enc = png::Encoder::new(file, side, side);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::One);
    enc.set_compression(png::Compression::Fast);
    let mut w = enc.write_header().unwrap().into_stream_writer().unwrap();
    let row = vec![0u8; side.div_ceil(8) as usize];
    for _ in 0..side {
        std::io::Write::write_all(&mut w, &row).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// The process's peak resident memory so far, in bytes (Linux).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header_in_a_few_megabytes() {
    let side = 12_000u32;
    let bytes = bomb(side);
    assert!(bytes.len() < 1_000_000, "{} bytes", bytes.len());
    assert!(u64::from(side) * u64::from(side) > MAX_PIXELS);
    let before = peak_rss();
    let e = decode_image(&bytes, 32).unwrap_err();
    assert!(e.contains("12000x12000") && e.contains("megapixels"), "{e}");
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        // Decoded, the image would take 144 MB as 8-bit gray and 432 MB as RGB.
        let grew = after.saturating_sub(before);
        assert!(grew < 16 << 20, "peak memory grew by {} MB", grew >> 20);
    }
}
