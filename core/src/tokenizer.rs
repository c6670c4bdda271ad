//! Hugging Face `tokenizer.json` through the `tokenizers` crate, with Llama's BOS handling and
//! fixed-length padding.
//!
//! Like transformers' `LlamaTokenizer`, the text is encoded without special tokens and `<s>` is
//! prepended when `add_bos_token` is true (the default; TinyLlama sets it), `</s>` appended when
//! `add_eos_token` is true (TinyLlama: false). Both flags are read from `tokenizer_config.json`
//! when it sits next to `tokenizer.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizer config {path} is malformed: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("cannot tokenize prompt {index}: {reason}")]
    Encode { index: usize, reason: String },
    #[error("tokenizer has no token `{token}` (needed as the {role} token)")]
    MissingSpecial { token: String, role: &'static str },
}

/// A special token in `tokenizer_config.json`: a string or `{"content": ...}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Plain(String),
    Added { content: String },
}

impl SpecialToken {
    fn content(&self) -> &str {
        match self {
            SpecialToken::Plain(s) => s,
            SpecialToken::Added { content } => content,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct TokenizerConfigJson {
    #[serde(default)]
    add_bos_token: Option<bool>,
    #[serde(default)]
    add_eos_token: Option<bool>,
    #[serde(default)]
    bos_token: Option<SpecialToken>,
    #[serde(default)]
    eos_token: Option<SpecialToken>,
    #[serde(default)]
    pad_token: Option<SpecialToken>,
}

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    Left,
    Right,
}

/// Token ids and a mask, row-major `[n, len]`, 1 = real token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub ids: Vec<i64>,
    pub mask: Vec<i64>,
    pub n: usize,
    pub len: usize,
}

impl TokenBatch {
    /// Rows `start..end` as a new batch.
    pub fn rows(&self, start: usize, end: usize) -> TokenBatch {
        TokenBatch {
            ids: self.ids[start * self.len..end * self.len].to_vec(),
            mask: self.mask[start * self.len..end * self.len].to_vec(),
            n: end - start,
            len: self.len,
        }
    }
}

/// A Llama tokenizer: `tokenizer.json` plus the BOS/EOS/pad conventions.
pub struct LlamaTokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: u32,
    pub add_bos: bool,
    pub add_eos: bool,
}

impl LlamaTokenizer {
    /// Loads `dir/tokenizer.json` (and `dir/tokenizer_config.json` if present), or a
    /// `tokenizer.json` path.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let (json, dir) = if path.is_dir() {
            (path.join("tokenizer.json"), path.to_path_buf())
        } else {
            (
                path.to_path_buf(),
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            )
        };
        let inner = tokenizers::Tokenizer::from_file(&json).map_err(|e| TokenizerError::Load {
            path: json.clone(),
            reason: if json.exists() {
                e.to_string()
            } else {
                "file not found (the model folder needs tokenizer.json for --prompts)".into()
            },
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfigJson = if config_path.is_file() {
            let text =
                std::fs::read_to_string(&config_path).map_err(|e| TokenizerError::Config {
                    path: config_path.clone(),
                    reason: e.to_string(),
                })?;
            serde_json::from_str(&text).map_err(|e| TokenizerError::Config {
                path: config_path.clone(),
                reason: e.to_string(),
            })?
        } else {
            TokenizerConfigJson::default()
        };
        Self::new(inner, config)
    }

    fn new(
        inner: tokenizers::Tokenizer,
        config: TokenizerConfigJson,
    ) -> Result<Self, TokenizerError> {
        let lookup = |tok: &Option<SpecialToken>, default: &str, role: &'static str| {
            let name = tok.as_ref().map(|t| t.content()).unwrap_or(default);
            match inner.token_to_id(name) {
                Some(id) => Ok(Some(id)),
                None if tok.is_some() => Err(TokenizerError::MissingSpecial {
                    token: name.to_string(),
                    role,
                }),
                None => Ok(None),
            }
        };
        let bos_id = lookup(&config.bos_token, "<s>", "BOS")?;
        let eos_id = lookup(&config.eos_token, "</s>", "EOS")?;
        let pad_id = match &config.pad_token {
            Some(t) => lookup(&Some(SpecialToken::Plain(t.content().into())), "", "pad")?,
            None => None,
        };
        let add_bos = config.add_bos_token.unwrap_or(true);
        if add_bos && bos_id.is_none() {
            return Err(TokenizerError::MissingSpecial {
                token: "<s>".into(),
                role: "BOS",
            });
        }
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            // Pads are masked out of attention, so any id works; follow TinyLlama-Chat (pad =
            // eos), else 0.
            pad_id: pad_id.or(eos_id).unwrap_or(0),
            add_bos,
            add_eos: config.add_eos_token.unwrap_or(false),
        })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of one text, with BOS/EOS as configured.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let enc = self.inner.encode(text, false).map_err(|e| e.to_string())?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        if self.add_eos {
            ids.extend(self.eos_id);
        }
        Ok(ids)
    }

    /// The indices of the texts longer than `len` tokens (which [`Self::encode_batch`] with
    /// `Some(len)` cuts), so that callers can say so.
    pub fn longer_than(
        &self,
        texts: &[impl AsRef<str>],
        len: usize,
    ) -> Result<Vec<usize>, TokenizerError> {
        let mut out = Vec::new();
        for (index, t) in texts.iter().enumerate() {
            let ids = self
                .encode(t.as_ref())
                .map_err(|reason| TokenizerError::Encode { index, reason })?;
            if ids.len() > len {
                out.push(index);
            }
        }
        Ok(out)
    }

    /// Encodes and pads to a common length: `max_len` when given (longer prompts are truncated,
    /// keeping their start, so BOS stays), else the longest prompt.
    pub fn encode_batch(
        &self,
        texts: &[impl AsRef<str>],
        max_len: Option<usize>,
        side: PaddingSide,
    ) -> Result<TokenBatch, TokenizerError> {
        let mut rows = texts
            .iter()
            .enumerate()
            .map(|(index, t)| {
                self.encode(t.as_ref())
                    .map_err(|reason| TokenizerError::Encode { index, reason })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let len = max_len.unwrap_or_else(|| rows.iter().map(Vec::len).max().unwrap_or(0));
        for row in &mut rows {
            row.truncate(len);
        }
        Ok(pad_rows(&rows, len, self.pad_id, side))
    }
}

/// Pads variable-length rows to `len` with `pad_id`, on the given side, with a 1/0 mask.
pub fn pad_rows(rows: &[Vec<u32>], len: usize, pad_id: u32, side: PaddingSide) -> TokenBatch {
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut mask = Vec::with_capacity(rows.len() * len);
    for row in rows {
        let n_pad = len - row.len().min(len);
        let real = row.iter().take(len).map(|&i| i as i64);
        let pads = std::iter::repeat_n(pad_id as i64, n_pad);
        match side {
            PaddingSide::Left => {
                ids.extend(pads.chain(real));
                mask.extend(
                    std::iter::repeat_n(0, n_pad).chain(std::iter::repeat_n(1, len - n_pad)),
                );
            }
            PaddingSide::Right => {
                ids.extend(real.chain(pads));
                mask.extend(
                    std::iter::repeat_n(1, len - n_pad).chain(std::iter::repeat_n(0, n_pad)),
                );
            }
        }
    }
    TokenBatch {
        ids,
        mask,
        n: rows.len(),
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_puts_pads_on_the_requested_side_and_masks_them() {
        let rows = vec![vec![1, 5, 6], vec![1, 7]];
        let right = pad_rows(&rows, 3, 0, PaddingSide::Right);
        assert_eq!(right.ids, vec![1, 5, 6, 1, 7, 0]);
        assert_eq!(right.mask, vec![1, 1, 1, 1, 1, 0]);
        let left = pad_rows(&rows, 3, 0, PaddingSide::Left);
        assert_eq!(left.ids, vec![1, 5, 6, 0, 1, 7]);
        assert_eq!(left.mask, vec![1, 1, 1, 0, 1, 1]);
    }
}
