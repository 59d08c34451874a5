//! The JSON files of a model directory (`config.json`, `tokenizer_config.json`,
//! `generation_config.json`, `rlhf.json`): written pretty with a trailing newline, as
//! `transformers` writes them; optional ones read as an object when present and well-formed.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A JSON file a run depends on (`rlhf.json`, `state/trainer.json`); errors name the file.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

pub fn write(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The object in `path`, or an empty one when the file is missing or not a JSON object
/// (optional files only: they hold defaults, never something a run depends on).
pub fn read_optional(path: &Path) -> Map<String, Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}
