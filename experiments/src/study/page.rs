//! The rating page and the ratings file (STUDY.md 5.5). `flowlens study export-html` fills
//! the hand-written template (assets/study/page.html: inline CSS and JS, a content-security
//! policy that forbids every network request) with the raters' assignments and the images as
//! `data:` URIs. The page writes a ratings file, `{"format", "payload", "crc32"}`, whose
//! payload is a JSON *string* so that the CRC-32 covers the exact bytes in JavaScript and Rust
//! alike. [`RatingsPayload`] is the Rust twin of the page's serializer (same key order, only
//! integers, strings and booleans), used by `study simulate` and the tests.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::design::StudyToml;
use super::files::{Lock, Manifest, StudyDir, sha256_hex, write_whole};

/// The template, with one `__FLOWLENS_STUDY_DATA__` placeholder.
pub const TEMPLATE: &str = include_str!("../../../assets/study/page.html");
const PLACEHOLDER: &str = "__FLOWLENS_STUDY_DATA__";
pub const RATINGS_FORMAT: &str = "flowlens-ratings/1";
/// The page's data format.
pub const PAGE_FORMAT: &str = "flowlens-study-page/1";
/// Pages above this size get a warning (browsers slow down; mail refuses them).
const WARN_BYTES: usize = 50 << 20;

/// One judgment as the page records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judgment {
    pub seq: usize,
    pub item: String,
    pub kind: String,
    pub left: String,
    pub right: String,
    pub criterion: String,
    /// `left`, `right`, `tie` or `both_bad`.
    pub choice: String,
    pub shown_at: i64,
    pub answered_at: i64,
    pub rt_ms: i64,
}

/// The payload of a ratings file (field order = the page's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatingsPayload {
    pub study_id: String,
    pub manifest_sha256: String,
    pub page_sha256: String,
    pub rater: String,
    /// `html`, `app` or `simulated`.
    pub client: String,
    pub user_agent: String,
    pub viewport: [i64; 2],
    pub complete: bool,
    pub judgments: Vec<Judgment>,
}

#[derive(Serialize, Deserialize)]
struct RatingsFile {
    format: String,
    payload: String,
    crc32: String,
}

impl RatingsPayload {
    /// The ratings file's bytes, exactly as the page's `buildRatingsFile` writes them.
    pub fn to_file(&self) -> String {
        let payload = serde_json::to_string(self).expect("plain data");
        let crc = format!("{:08x}", crc32fast::hash(payload.as_bytes()));
        serde_json::to_string(&RatingsFile {
            format: RATINGS_FORMAT.into(),
            payload,
            crc32: crc,
        })
        .expect("plain data")
    }

    /// Parses a ratings file, checking its format and checksum; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let text = text.trim_start_matches('\u{feff}');
        let file: RatingsFile = serde_json::from_str(text).with_context(|| {
            format!(
                "{what} is not a flowlens ratings file (not the expected JSON; is it truncated?)"
            )
        })?;
        ensure!(
            file.format == RATINGS_FORMAT,
            "{what}: format `{}`, expected `{RATINGS_FORMAT}`",
            file.format
        );
        let crc = format!("{:08x}", crc32fast::hash(file.payload.as_bytes()));
        ensure!(
            crc == file.crc32,
            "{what}: checksum mismatch (the file says {}, its content gives {crc}): the file was edited or damaged after the page wrote it; ask the rater for the file again",
            file.crc32
        );
        let mut de = serde_json::Deserializer::from_str(&file.payload);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| anyhow::anyhow!("{what}: payload field `{}`: {}", e.path(), e.inner()))
    }
}

/// The criterion texts as the page reads them.
#[derive(Serialize)]
struct PageCriterion<'a> {
    question: &'a str,
    show_prompt: bool,
}

#[derive(Serialize)]
struct PageItem<'a> {
    seq: usize,
    item: &'a str,
    kind: &'a str,
    prompt: &'a str,
    left: &'a str,
    right: &'a str,
    criterion: &'a str,
}

#[derive(Serialize)]
struct PageRater<'a> {
    code: &'a str,
    items: Vec<PageItem<'a>>,
}

#[derive(Serialize)]
struct PageData<'a> {
    format: &'a str,
    study_id: &'a str,
    manifest_sha256: &'a str,
    page_sha256: String,
    title: &'a str,
    instructions: &'a str,
    consent: &'a str,
    responses: &'a [String],
    min_view_ms: u64,
    criteria: std::collections::BTreeMap<&'a str, PageCriterion<'a>>,
    raters: Vec<PageRater<'a>>,
    images: std::collections::BTreeMap<&'a str, String>,
    completion_code: &'a str,
}

/// How the page embeds the images: the study's PNGs as they are, or every image re-encoded as
/// JPEG at one quality (smaller pages; the same codec for every system keeps it fair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PageImages {
    #[default]
    Png,
    Jpeg(u8),
}

impl PageImages {
    /// `png`, or `jpeg` with `quality` (1-100).
    pub fn parse(format: &str, quality: u8) -> Result<Self> {
        match format {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => {
                ensure!(
                    (1..=100).contains(&quality),
                    "--quality {quality}: a JPEG quality lies in 1-100"
                );
                Ok(Self::Jpeg(quality))
            }
            other => bail!("--image-format `{other}`: use png or jpeg"),
        }
    }

    fn data_uri(self, png: &[u8]) -> Result<String> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(match self {
            Self::Png => format!("data:image/png;base64,{}", b64(png)),
            Self::Jpeg(q) => {
                let img = image::load_from_memory(png)?.to_rgb8();
                let mut jpeg = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, q)
                    .encode_image(&img)
                    .context("JPEG encoding failed")?;
                format!("data:image/jpeg;base64,{}", b64(&jpeg))
            }
        })
    }
}

/// The page for `raters` (all of the study's when empty): the template with the data element
/// filled in. Deterministic: the same study gives the same bytes.
pub fn render(
    study: &StudyDir,
    spec: &StudyToml,
    manifest: &Manifest,
    lock: &Lock,
    raters: &[String],
    format: PageImages,
) -> Result<String> {
    ensure!(
        TEMPLATE.matches(PLACEHOLDER).count() == 1,
        "the page template has lost its data placeholder (a packaging bug)"
    );
    let chosen: Vec<&super::files::Rater> = if raters.is_empty() {
        manifest.raters.iter().collect()
    } else {
        raters
            .iter()
            .map(|c| {
                manifest.rater(c).with_context(|| {
                    format!("rater `{c}` is not in the study (its codes are in manifest.json)")
                })
            })
            .collect::<Result<_>>()?
    };
    let mut images = std::collections::BTreeMap::new();
    for r in &chosen {
        for t in &r.tasks {
            for id in [&t.left, &t.right] {
                if images.contains_key(id.as_str()) {
                    continue;
                }
                let path = study.image(id);
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read the study image {}", path.display()))?;
                ensure!(
                    manifest
                        .images
                        .get(id)
                        .is_some_and(|h| *h == sha256_hex(&bytes)),
                    "{} does not match its sha256 in manifest.json: the study's images were changed",
                    path.display()
                );
                images.insert(id.as_str(), format.data_uri(&bytes)?);
            }
        }
    }
    let mut data = PageData {
        format: PAGE_FORMAT,
        study_id: &manifest.study_id,
        manifest_sha256: &lock.manifest_sha256,
        page_sha256: String::new(),
        title: &spec.protocol.title,
        instructions: &spec.protocol.instructions,
        consent: &spec.protocol.consent,
        responses: &spec.protocol.responses,
        min_view_ms: spec.protocol.min_view_ms,
        criteria: spec
            .criteria
            .iter()
            .map(|c| {
                (
                    c.id.as_str(),
                    PageCriterion {
                        question: &c.question,
                        show_prompt: c.show_prompt,
                    },
                )
            })
            .collect(),
        raters: chosen
            .iter()
            .map(|r| PageRater {
                code: &r.code,
                items: r
                    .tasks
                    .iter()
                    .map(|t| PageItem {
                        seq: t.seq,
                        item: &t.item,
                        kind: &t.kind,
                        prompt: manifest.prompt_of(&t.item).map_or("", |p| p.text.as_str()),
                        left: &t.left,
                        right: &t.right,
                        criterion: &t.criterion,
                    })
                    .collect(),
            })
            .collect(),
        images,
        completion_code: &spec.protocol.completion_code,
    };
    data.page_sha256 = sha256_hex(serde_json::to_string(&data)?.as_bytes());
    // Inside a script element only `<` can end the element early (`</script>`, `<!--`): every
    // `<` is written as \u003c, which JSON.parse turns back into `<`.
    let json = serde_json::to_string(&data)?.replace('<', "\\u003c");
    Ok(TEMPLATE.replacen(PLACEHOLDER, &json, 1))
}

/// `flowlens study export-html`: one page for every rater (`out`), or one page per rater
/// (`per_rater`: `out` is a folder, files `rater-<code>.html`). Returns the files written.
pub fn export(
    study_root: &Path,
    out: &Path,
    per_rater: bool,
    format: PageImages,
) -> Result<Vec<std::path::PathBuf>> {
    let study = StudyDir::open(study_root)?;
    let lock = study.require_lock("export-html")?;
    let spec = super::lock::check_locked(&study, &lock)?;
    let manifest = study.read_manifest()?;
    let pages: Vec<(std::path::PathBuf, Vec<String>)> = if per_rater {
        manifest
            .raters
            .iter()
            .map(|r| {
                (
                    out.join(format!("rater-{}.html", r.code)),
                    vec![r.code.clone()],
                )
            })
            .collect()
    } else {
        vec![(out.to_path_buf(), Vec::new())]
    };
    let mut written = Vec::new();
    for (path, raters) in pages {
        let html = render(&study, &spec, &manifest, &lock, &raters, format)?;
        if html.len() > WARN_BYTES {
            eprintln!(
                "warning: {} is {} MiB; browsers and mail handle pages above 50 MiB badly: export one page per rater (--per-rater)",
                path.display(),
                html.len() >> 20
            );
        }
        write_whole(&path, html.as_bytes())?;
        study.audit_line(&format!(
            "export-html: {} ({} raters, {format:?} images, sha256 {})",
            path.display(),
            if raters.is_empty() {
                manifest.raters.len()
            } else {
                raters.len()
            },
            sha256_hex(html.as_bytes())
        ))?;
        written.push(path);
    }
    if written.is_empty() {
        bail!("the study has no raters");
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page's serializer (tools/study/check_page.mjs writes this sample with the page's own
    /// JavaScript) and Rust's give the same bytes.
    #[test]
    fn the_rust_serializer_matches_the_pages_bytes() {
        let sample = include_str!("../../../tools/study/sample.flowlens-ratings.json");
        let payload = RatingsPayload::parse(sample, "sample").unwrap();
        assert_eq!(payload.to_file(), sample.trim_end());
        assert_eq!(payload.judgments.len(), 3);
        let mut tampered =
            sample.replace("\\\"left\\\",\\\"shown_at", "\\\"right\\\",\\\"shown_at");
        assert_ne!(tampered, sample);
        let err = RatingsPayload::parse(&tampered, "x.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum mismatch"), "{err}");
        tampered = sample[..sample.len() / 2].to_string();
        let err = RatingsPayload::parse(&tampered, "x.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
