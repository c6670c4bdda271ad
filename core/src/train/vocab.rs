//! The demo's tokenizer: a Hugging Face `tokenizer.json` (word-level model, lower-casing,
//! whitespace pre-tokenizer) over the shapes captions' vocabulary, with `<unk>`, `<s>`, `</s>`
//! at ids 0, 1, 2 as in Llama, so the demo loads it through the same path as TinyLlama's.

use std::path::Path;

use serde_json::json;

use crate::data::shapes::{COLOURS, Relation, Shape};

/// Every word a shapes caption can contain, in a fixed order.
pub fn shapes_words() -> Vec<String> {
    let mut words: Vec<String> = ["a", "and", "small", "large", "of"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    words.extend(COLOURS.iter().map(|(n, _)| n.to_string()));
    words.extend(Shape::ALL.iter().map(|s| s.name().to_string()));
    for r in Relation::ALL {
        for w in r.phrase().split(' ') {
            if !words.iter().any(|x| x == w) {
                words.push(w.to_string());
            }
        }
    }
    words
}

/// Writes the tokenizer file (atomically).
pub fn write_shapes_tokenizer(path: &Path) -> std::io::Result<()> {
    let specials = ["<unk>", "<s>", "</s>"];
    let mut vocab = serde_json::Map::new();
    for (i, w) in specials
        .iter()
        .map(|s| s.to_string())
        .chain(shapes_words())
        .enumerate()
    {
        vocab.insert(w, json!(i));
    }
    let added: Vec<_> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    crate::fsutil::write_atomic(path, serde_json::to_string_pretty(&tokenizer)?.as_bytes())
}
