//! Webdataset shards: `.tar` files whose members are grouped into samples by key, as
//! img2dataset writes them (`00000001.jpg`, `00000001.txt`, `00000001.json`, ...).
//!
//! A member's key is its path up to the first `.` of its base name (`a/b.c.jpg` has key `a/b`
//! and extension `c.jpg`, which is not an image; `a/b.jpg` has key `a/b` and extension `jpg`).
//! Members of one key must be in the same shard; the same key in two shards is two samples.
//! Per key the source keeps the image member (`.jpg`, `.jpeg`, `.png` or `.webp`, the first one
//! in the shard if there are several) and the caption members (`.txt`, preferred, and `.json`
//! with a string `"caption"` field). Hidden members (base name starting with `.`) are ignored;
//! link members (symbolic or hard links) are dropped and counted.
//!
//! [`WebDataset::open`] reads each shard's headers once (seeking over the contents) and remembers
//! the byte offset and length of those members; [`Dataset::get`] reads them back with a seek.
//! Keys without an image and link members are dropped at open and counted
//! ([`Dataset::skipped_at_open`], which the latent cache adds to its skipped items); a key with an
//! image but no caption is a [`DataError::Item`] at `get`.
//!
//! Damaged shards: a shard whose first header cannot be read (not a tar file, or corrupt from the
//! start) fails [`WebDataset::open`] with [`DataError::Open`] naming it. A shard that is truncated
//! or corrupt further on keeps the members read before the damage (a member whose contents run
//! past the end of the file is dropped) and the problem is recorded in
//! [`WebDataset::problems`] and counted as a skipped item (how many samples the lost tail held
//! cannot be known): a partly downloaded shard still trains on what it holds, and says so.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::dataset::{
    DataError, Dataset, Example, canonical_display, has_extension, hash_file_identity,
};
use super::preprocess::decode_image;
use crate::fsutil::Fnv64;

/// Image extensions recognised in shards (lowercase comparison). WebP is decoded by the `image`
/// crate's pure-Rust decoder.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Most shards a brace pattern may expand to (guards against typos such as `{0..99999999}`).
pub const MAX_SHARDS: usize = 1_000_000;

/// A member's place in its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    offset: u64,
    len: u64,
}

/// One sample: a key with an image.
#[derive(Debug, Clone)]
struct Sample {
    shard: usize,
    key: String,
    image: Span,
    txt: Option<Span>,
    json: Option<Span>,
}

/// Members of one key while a shard is scanned.
#[derive(Debug, Default, Clone)]
struct Group {
    key: String,
    image: Option<Span>,
    txt: Option<Span>,
    json: Option<Span>,
}

/// Image/caption samples from webdataset `.tar` shards, read lazily.
#[derive(Debug, Clone)]
pub struct WebDataset {
    spec: String,
    shards: Vec<PathBuf>,
    samples: Vec<Sample>,
    skipped_at_open: usize,
    /// Why keys were dropped at open (the first few).
    skipped_examples: Vec<String>,
    problems: Vec<String>,
    fingerprint: String,
}

impl WebDataset {
    /// Scans the shards `spec` names: a `.tar` file, a folder of `.tar` files (sorted, not
    /// recursive), or a brace pattern (`data/{00000..00003}.tar`, `data/{a,b}.tar`; ranges keep
    /// the zero padding of their bounds).
    ///
    /// Errors: [`DataError::Open`] for a bad pattern, a missing or unreadable shard, or a shard
    /// that is not a tar file; [`DataError::Empty`] if there are no shards or no key has an image.
    pub fn open(spec: &str) -> Result<Self, DataError> {
        let shards = resolve_shards(spec)?;
        let mut samples = Vec::new();
        let mut skipped_at_open = 0;
        let mut skipped_examples = Vec::new();
        let mut problems = Vec::new();
        let mut hash = Fnv64::new();
        for (index, shard) in shards.iter().enumerate() {
            let meta = std::fs::metadata(shard).map_err(|e| DataError::Open {
                path: shard.display().to_string(),
                reason: format!("cannot open shard: {e}"),
            })?;
            hash_file_identity(&mut hash, &canonical_display(shard), &meta);
            let scan = scan_shard(shard, meta.len())?;
            if let Some(problem) = scan.problem {
                problems.push(format!("{}: {problem}", shard.display()));
            }
            let mut drop = |why: String| {
                skipped_at_open += 1;
                if skipped_examples.len() < 20 {
                    skipped_examples.push(format!("{}:{why}", shard.display()));
                }
            };
            for link in scan.links {
                drop(format!("{link}: a link member, not a file"));
            }
            for group in scan.groups {
                match group.image {
                    Some(image) => samples.push(Sample {
                        shard: index,
                        key: group.key,
                        image,
                        txt: group.txt,
                        json: group.json,
                    }),
                    None => drop(format!("{}: no image member", group.key)),
                }
            }
        }
        if samples.is_empty() {
            return Err(DataError::Empty {
                source_desc: spec.to_string(),
                detail: format!(
                    ": no sample with an image (.jpg/.jpeg/.png/.webp) in {} shard(s){}",
                    shards.len(),
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!("; problems: {}", problems.join("; "))
                    }
                ),
            });
        }
        let fingerprint = format!(
            "webdataset:v1:{spec}:shards={}:n={}:{}",
            shards.len(),
            samples.len(),
            hash.hex()
        );
        Ok(WebDataset {
            spec: spec.to_string(),
            shards,
            samples,
            skipped_at_open,
            skipped_examples,
            problems,
            fingerprint,
        })
    }

    /// The shards, in order.
    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }

    /// Damage found while scanning (truncated or corrupt shards whose readable part was kept),
    /// one message per shard naming it. Empty for healthy shards.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The key of sample `index` (`shard-path:key`), for messages.
    pub fn key(&self, index: usize) -> Option<String> {
        self.samples.get(index).map(|s| self.item_name(s))
    }

    fn item_name(&self, sample: &Sample) -> String {
        let shard = self
            .shards
            .get(sample.shard)
            .map_or_else(String::new, |p| p.display().to_string());
        format!("{shard}:{}", sample.key)
    }

    /// Reads one member's bytes.
    fn read_span(&self, shard: usize, span: Span) -> std::io::Result<Vec<u8>> {
        let path = self
            .shards
            .get(shard)
            .ok_or_else(|| std::io::Error::other("shard index out of range"))?;
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(span.offset))?;
        let len = usize::try_from(span.len).map_err(std::io::Error::other)?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn caption(&self, sample: &Sample) -> Result<String, String> {
        if let Some(span) = sample.txt {
            let bytes = self
                .read_span(sample.shard, span)
                .map_err(|e| format!("cannot read .txt: {e}"))?;
            let text = String::from_utf8(bytes).map_err(|_| ".txt is not UTF-8".to_string())?;
            return Ok(text.trim().to_string());
        }
        if let Some(span) = sample.json {
            let bytes = self
                .read_span(sample.shard, span)
                .map_err(|e| format!("cannot read .json: {e}"))?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!(".json is not valid JSON: {e}"))?;
            return match value.get("caption") {
                Some(serde_json::Value::String(c)) => Ok(c.trim().to_string()),
                Some(serde_json::Value::Null) | None => {
                    Err("no caption: no .txt and the .json has no \"caption\"".to_string())
                }
                Some(other) => Err(format!(".json \"caption\" is not a string: {other}")),
            };
        }
        Err("no caption: neither .txt nor .json".to_string())
    }
}

impl Dataset for WebDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn get(&self, index: usize, size: usize) -> Result<Example, DataError> {
        let sample = self.samples.get(index).ok_or_else(|| DataError::Item {
            item: format!("{}[{index}]", self.spec),
            reason: format!("index out of range (len {})", self.samples.len()),
        })?;
        let item_err = |reason: String| DataError::Item {
            item: self.item_name(sample),
            reason,
        };
        let caption = self.caption(sample).map_err(item_err)?;
        if caption.is_empty() {
            return Err(item_err("caption is empty".to_string()));
        }
        let bytes = self
            .read_span(sample.shard, sample.image)
            .map_err(|e| item_err(format!("cannot read image: {e}")))?;
        let pixels = decode_image(&bytes, size).map_err(item_err)?;
        Ok(Example { pixels, caption })
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn skipped_at_open(&self) -> (usize, Vec<String>) {
        let mut examples = self.problems.clone();
        examples.extend(self.skipped_examples.iter().cloned());
        (self.skipped_at_open + self.problems.len(), examples)
    }
}

/// What a shard scan found.
struct Scan {
    groups: Vec<Group>,
    /// Link members (symbolic or hard) that would have been part of a sample.
    links: Vec<String>,
    /// Damage after at least one member was read.
    problem: Option<String>,
}

/// Reads the headers of one shard and groups its members by key.
fn scan_shard(shard: &Path, file_len: u64) -> Result<Scan, DataError> {
    let open_err = |reason: String| DataError::Open {
        path: shard.display().to_string(),
        reason,
    };
    let file = File::open(shard).map_err(|e| open_err(format!("cannot open shard: {e}")))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let entries = archive
        .entries_with_seek()
        .map_err(|e| open_err(format!("not a readable tar file: {e}")))?;

    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: HashMap<String, usize> = HashMap::new();
    let mut members = 0usize;
    let mut problem = None;
    let mut links = Vec::new();
    for entry in entries {
        let failure = match entry {
            Err(e) => Some(format!("corrupt tar header: {e}")),
            Ok(entry) => {
                let span = Span {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                };
                match entry.path() {
                    Err(e) => Some(format!("unreadable member name: {e}")),
                    Ok(_) if span.offset.saturating_add(span.len) > file_len => Some(format!(
                        "truncated: member at byte {} of length {} runs past the end of the file \
                         ({file_len} bytes)",
                        span.offset, span.len
                    )),
                    Ok(path) => {
                        members += 1;
                        let kind = entry.header().entry_type();
                        if (kind.is_symlink() || kind.is_hard_link())
                            && let Some((key, _)) = split_key(&path)
                        {
                            links.push(key);
                        } else if kind.is_file()
                            && let Some((key, ext)) = split_key(&path)
                        {
                            let slot = *by_key.entry(key.clone()).or_insert_with(|| {
                                groups.push(Group {
                                    key,
                                    ..Group::default()
                                });
                                groups.len() - 1
                            });
                            let group = &mut groups[slot];
                            if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                                group.image.get_or_insert(span);
                            } else if ext == "txt" {
                                group.txt.get_or_insert(span);
                            } else if ext == "json" {
                                group.json.get_or_insert(span);
                            }
                        }
                        None
                    }
                }
            }
        };
        if let Some(reason) = failure {
            if members == 0 {
                return Err(open_err(format!("not a readable tar shard: {reason}")));
            }
            problem = Some(format!(
                "{reason}; kept the {members} member(s) read before it"
            ));
            break;
        }
    }
    Ok(Scan {
        groups,
        links,
        problem,
    })
}

/// Splits a member path into (key, lowercase extension): the key is the path up to the first
/// `.` of the base name. `None` for hidden members and names without an extension.
fn split_key(path: &Path) -> Option<(String, String)> {
    let name = path.file_name()?.to_str()?;
    if name.starts_with('.') {
        return None;
    }
    let (stem, ext) = name.split_once('.')?;
    let key = match path.parent().and_then(Path::to_str) {
        Some(dir) if !dir.is_empty() => format!("{dir}/{stem}"),
        _ => stem.to_string(),
    };
    Some((key, ext.to_ascii_lowercase()))
}

/// The shard files `spec` names, in order.
fn resolve_shards(spec: &str) -> Result<Vec<PathBuf>, DataError> {
    let open_err = |path: &str, reason: String| DataError::Open {
        path: path.to_string(),
        reason,
    };
    if spec.contains('{') {
        let shards = expand_braces(spec).map_err(|e| open_err(spec, e))?;
        for shard in &shards {
            if !shard.is_file() {
                return Err(open_err(
                    &shard.display().to_string(),
                    format!("shard of pattern `{spec}` does not exist"),
                ));
            }
        }
        return Ok(shards);
    }
    let path = Path::new(spec);
    let meta = std::fs::metadata(path).map_err(|e| open_err(spec, format!("cannot open: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut shards = Vec::new();
    let entries =
        std::fs::read_dir(path).map_err(|e| open_err(spec, format!("cannot list: {e}")))?;
    for entry in entries {
        let p = entry
            .map_err(|e| open_err(spec, format!("cannot list: {e}")))?
            .path();
        if has_extension(&p, &["tar"]) && p.is_file() {
            shards.push(p);
        }
    }
    shards.sort();
    if shards.is_empty() {
        return Err(DataError::Empty {
            source_desc: spec.to_string(),
            detail: ": no .tar shards in this folder".to_string(),
        });
    }
    Ok(shards)
}

/// Expands brace patterns: `{A..B}` (integers, zero-padded to the width of a bound written with
/// a leading zero) and `{x,y,z}`; several braces multiply. No nesting.
pub fn expand_braces(pattern: &str) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![String::new()];
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| format!("unclosed `{{` in `{pattern}`"))?;
        let body = &rest[open + 1..close];
        if body.contains('{') {
            return Err(format!("nested braces are not supported in `{pattern}`"));
        }
        let choices = brace_choices(body).map_err(|e| format!("`{pattern}`: {e}"))?;
        let prefix = &rest[..open];
        let total = out.len().saturating_mul(choices.len());
        if total > MAX_SHARDS {
            return Err(format!(
                "`{pattern}` expands to more than {MAX_SHARDS} shards"
            ));
        }
        out = out
            .iter()
            .flat_map(|head| choices.iter().map(move |c| format!("{head}{prefix}{c}")))
            .collect();
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("unmatched `}}` in `{pattern}`"));
    }
    Ok(out
        .into_iter()
        .map(|s| PathBuf::from(format!("{s}{rest}")))
        .collect())
}

/// The alternatives of one brace body.
fn brace_choices(body: &str) -> Result<Vec<String>, String> {
    if let Some((a, b)) = body.split_once("..") {
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("`{{{body}}}`: `{s}` is not a non-negative integer"))
        };
        let (lo, hi) = (parse(a)?, parse(b)?);
        if lo > hi {
            return Err(format!("`{{{body}}}`: the range is empty"));
        }
        if hi - lo >= MAX_SHARDS as u64 {
            return Err(format!(
                "`{{{body}}}` expands to more than {MAX_SHARDS} shards"
            ));
        }
        let padded = (a.len() > 1 && a.starts_with('0')) || (b.len() > 1 && b.starts_with('0'));
        let width = if padded { a.len().max(b.len()) } else { 0 };
        return Ok((lo..=hi).map(|i| format!("{i:0width$}")).collect());
    }
    if body.contains(',') {
        return Ok(body.split(',').map(str::to_string).collect());
    }
    Err(format!(
        "`{{{body}}}` is neither a range A..B nor a list a,b"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_with_padding() {
        let got = expand_braces("d/{00000..00002}.tar").expect("expand");
        assert_eq!(
            got,
            ["d/00000.tar", "d/00001.tar", "d/00002.tar"].map(PathBuf::from)
        );
        let got = expand_braces("{8..10}-{a,b}.tar").expect("expand");
        let got: Vec<String> = got.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            got,
            [
                "8-a.tar", "8-b.tar", "9-a.tar", "9-b.tar", "10-a.tar", "10-b.tar"
            ]
        );
        assert!(expand_braces("d/{3..1}.tar").is_err());
        assert!(expand_braces("d/{1..x}.tar").is_err());
        assert!(expand_braces("d/{1..2.tar").is_err());
        assert!(expand_braces("d/{1}.tar").is_err());
        assert!(expand_braces("d/{0..99999999}.tar").is_err());
    }

    #[test]
    fn keys_split_at_the_first_dot_of_the_base_name() {
        let split = |p: &str| split_key(Path::new(p));
        assert_eq!(
            split("00000001.jpg"),
            Some(("00000001".into(), "jpg".into()))
        );
        assert_eq!(split("a/b.c.JPG"), Some(("a/b".into(), "c.jpg".into())));
        assert_eq!(split("._hidden.jpg"), None);
        assert_eq!(split("noext"), None);
    }
}
