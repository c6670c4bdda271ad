//! Typed parsing of a model's `config.json` whose errors name the field that is wrong.

use serde::de::DeserializeOwned;

/// Parses `text` into `T`; the error reads ``field `a.b`: reason`` (serde's line/column suffix
/// dropped: the field path is the useful part).
pub fn parse_named<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        format!(
            "field `{}`: {}",
            e.path(),
            e.inner().to_string().split(" at line").next().unwrap_or("")
        )
    })
}
