//! The CLIP tokenizer (transformers `CLIPTokenizer`: lower-casing byte-level BPE with `</w>`
//! word ends, `<|startoftext|>` ... `<|endoftext|>`) from a Hugging Face `tokenizer.json`
//! through the `tokenizers` crate. Batches are padded to the longest prompt with the pad token
//! and truncated to the text tower's positions (77 for OpenAI CLIP) keeping the final EOS, as
//! `tokenizer(prompts, padding=True, truncation=True, max_length=77)` does.

use std::path::Path;

use crate::tokenizer::{TokenBatch, TokenizerError};

pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    pub eos_id: u32,
    pub pad_id: u32,
    pub max_len: usize,
}

fn special(value: &serde_json::Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("content").and_then(|c| c.as_str()))
}

impl ClipTokenizer {
    /// Loads `dir/tokenizer.json` (the pad token from `dir/tokenizer_config.json` when present,
    /// else `<|endoftext|>`); `max_len` is the text tower's `max_position_embeddings`.
    pub fn from_dir(dir: &Path, max_len: usize) -> Result<Self, TokenizerError> {
        let json = dir.join("tokenizer.json");
        let mut inner =
            tokenizers::Tokenizer::from_file(&json).map_err(|e| TokenizerError::Load {
                path: json.clone(),
                reason: if json.exists() {
                    e.to_string()
                } else {
                    "file not found (a CLIP folder needs tokenizer.json)".into()
                },
            })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::Load {
                path: json.clone(),
                reason: e.to_string(),
            })?;
        let config_path = dir.join("tokenizer_config.json");
        let mut pad_name = "<|endoftext|>".to_string();
        let mut eos_name = "<|endoftext|>".to_string();
        if config_path.is_file() {
            let bad = |reason: String| TokenizerError::Config {
                path: config_path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(&config_path).map_err(|e| bad(e.to_string()))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            if let Some(p) = value.get("pad_token").and_then(special) {
                pad_name = p.to_string();
            }
            if let Some(e) = value.get("eos_token").and_then(special) {
                eos_name = e.to_string();
            }
        }
        let id = |name: &str, role: &'static str| {
            inner
                .token_to_id(name)
                .ok_or_else(|| TokenizerError::MissingSpecial {
                    token: name.to_string(),
                    role,
                })
        };
        let eos_id = id(&eos_name, "end-of-text")?;
        let pad_id = id(&pad_name, "padding")?;
        Ok(Self {
            inner,
            eos_id,
            pad_id,
            max_len: max_len.max(2),
        })
    }

    /// Ids of one prompt with BOS and EOS (the file's post-processor), truncated to `max_len`
    /// with EOS kept last.
    pub fn encode(&self, prompt: &str, index: usize) -> Result<Vec<i64>, TokenizerError> {
        let enc = self
            .inner
            .encode(prompt, true)
            .map_err(|e| TokenizerError::Encode {
                index,
                reason: e.to_string(),
            })?;
        let mut ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        if ids.len() > self.max_len {
            ids.truncate(self.max_len - 1);
            ids.push(self.eos_id as i64);
        }
        Ok(ids)
    }

    /// A batch padded (right) to its longest prompt.
    pub fn batch(&self, prompts: &[String]) -> Result<TokenBatch, TokenizerError> {
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| self.encode(p, i))
            .collect::<Result<Vec<_>, _>>()?;
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for row in &rows {
            ids.extend(row);
            mask.extend(std::iter::repeat_n(1, row.len()));
            ids.extend(std::iter::repeat_n(self.pad_id as i64, len - row.len()));
            mask.extend(std::iter::repeat_n(0, len - row.len()));
        }
        Ok(TokenBatch {
            ids,
            mask,
            n: rows.len(),
            len,
        })
    }
}
