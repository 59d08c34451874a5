//! The tokenizer that travels with a model directory (`tokenizer.json` + `tokenizer_config.json`).

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::bad_input;

/// Files a model directory's tokenizer may consist of; each present one is copied on save.
pub const TOKENIZER_FILES: [&str; 4] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"];

/// Reads `tokenizer.json` from a model directory (or the file itself).
pub fn read(path: &Path) -> Result<Tokenizer> {
    let file = if path.is_dir() { path.join("tokenizer.json") } else { path.to_path_buf() };
    if !file.is_file() {
        return Err(bad_input!(
            "{}: no tokenizer.json\nhint: rlhf needs the fast-tokenizer file; `AutoTokenizer.from_pretrained(...).save_pretrained(dir)` writes it",
            path.display()
        ));
    }
    Tokenizer::from_file(&file)
        .map_err(|e| bad_input!("{}: cannot load tokenizer: {e}", file.display()))
}

/// Every id the tokenizer can produce must index a row of the embedding.
pub fn check_fits(tokenizer: &Tokenizer, vocab_size: usize, dir: &Path) -> Result<()> {
    let needed = tokenizer.get_vocab_size(true);
    if needed > vocab_size {
        return Err(bad_input!(
            "{}: the tokenizer has {needed} tokens but the model's embedding has only {vocab_size} rows (vocab_size in config.json)\nhint: use the tokenizer the model was trained with",
            dir.display()
        ));
    }
    Ok(())
}

/// Copies the tokenizer files of `from` (a model directory or a `tokenizer.json`) into `to`,
/// writing a minimal `tokenizer_config.json` when there is none, so `AutoTokenizer` loads it.
pub fn copy_files(from: &Path, to: &Path, model_max_length: usize) -> Result<()> {
    if from.is_file() {
        std::fs::copy(from, to.join("tokenizer.json"))
            .with_context(|| format!("copying {}", from.display()))?;
    } else {
        for name in TOKENIZER_FILES {
            let source = from.join(name);
            if source.is_file() {
                std::fs::copy(&source, to.join(name))
                    .with_context(|| format!("copying {}", source.display()))?;
            }
        }
    }
    let config = to.join("tokenizer_config.json");
    if !config.exists() {
        let minimal = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": model_max_length,
        });
        std::fs::write(&config, serde_json::to_string_pretty(&minimal)? + "\n")
            .with_context(|| format!("writing {}", config.display()))?;
    }
    Ok(())
}
