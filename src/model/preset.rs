//! Model presets (`configs/models/*.toml`): a `config.json` written as TOML, with the
//! vocabulary and special tokens taken from the tokenizer the model will use.

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value, json};
use tokenizers::Tokenizer;

use super::config::{ModelConfig, SUPPORTED};
use super::gpt2::Gpt2Config;
use super::llama::{Flavor, LlamaConfig};
use crate::data::tokenizer::configured_token;
use crate::{bad_input, json_file, toml_file};

/// Presets built into the binary, by name (the files under `configs/models/`).
pub const BUILT_IN: [(&str, &str); 5] = [
    ("tiny", include_str!("../../configs/models/tiny.toml")),
    ("small", include_str!("../../configs/models/small.toml")),
    ("gpt2-124m", include_str!("../../configs/models/gpt2-124m.toml")),
    ("llama-tiny", include_str!("../../configs/models/llama-tiny.toml")),
    ("llama-small", include_str!("../../configs/models/llama-small.toml")),
];

/// Special-token ids a preset takes from its tokenizer when it does not set them.
const TOKEN_KEYS: [&str; 3] = ["bos_token_id", "eos_token_id", "pad_token_id"];

/// Resolves `preset` (a built-in name or a TOML file) with `overrides` against a tokenizer.
pub fn resolve(
    preset: &str,
    overrides: &[String],
    tokenizer: &Tokenizer,
    tokenizer_dir: &Path,
) -> Result<ModelConfig> {
    let (text, origin) = match BUILT_IN.iter().find(|(name, _)| *name == preset) {
        Some((name, text)) => (text.to_string(), format!("preset `{name}`")),
        None if Path::new(preset).is_file() => (
            std::fs::read_to_string(preset).map_err(|e| bad_input!("{preset}: {e}"))?,
            preset.to_string(),
        ),
        None => {
            let names: Vec<&str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            return Err(bad_input!(
                "unknown preset `{preset}` (built in: {}; or pass a .toml file)",
                names.join(", ")
            ));
        }
    };
    let mut table = toml_file::parse_table(&text, &origin, overrides)?;
    let model_type = match table.remove("model_type") {
        Some(toml::Value::String(t)) => t,
        _ => {
            return Err(bad_input!("{origin}: key `model_type` must be set (e.g. \"gpt2\")"));
        }
    };
    let sets_vocab = table.contains_key("vocab_size");
    let mut json = match model_type.as_str() {
        "gpt2" => family_json::<Gpt2Config>(table, &origin, overrides)?,
        t if Flavor::from_model_type(t).is_some() => {
            family_json::<LlamaConfig>(table, &origin, overrides)?
        }
        other => {
            return Err(bad_input!(
                "{origin}: key `model_type`: unsupported `{other}` (supported: {SUPPORTED})"
            ));
        }
    };
    json.insert("model_type".into(), json!(model_type));
    if !sets_vocab {
        json.insert("vocab_size".into(), json!(tokenizer.get_vocab_size(true)));
    }
    for (key, id) in TOKEN_KEYS.iter().zip(special_token_ids(tokenizer, tokenizer_dir)) {
        if !json.contains_key(*key) {
            json.insert(key.to_string(), id.map_or(Value::Null, |id| json!(id)));
        }
    }
    let config = ModelConfig::from_json(json).map_err(|e| bad_input!("{origin}: {e:#}"))?;
    crate::data::tokenizer::check_fits(tokenizer, config.vocab_size(), tokenizer_dir)?;
    Ok(config)
}

/// Checks every key against the family's config (`deny_unknown_fields` by hand: HF configs
/// carry keys we ignore, presets must not), then types the values.
fn family_json<C>(
    table: toml::Table,
    origin: &str,
    overrides: &[String],
) -> Result<Map<String, Value>>
where
    C: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    let Value::Object(defaults) = serde_json::to_value(C::default())? else {
        unreachable!("family configs are structs")
    };
    let allowed =
        |k: &str| defaults.contains_key(k) || TOKEN_KEYS.contains(&k) || k == "tie_word_embeddings";
    if let Some(key) = table.keys().find(|k| !allowed(k)) {
        let mut known: Vec<&str> = defaults.keys().map(String::as_str).collect();
        known.extend(TOKEN_KEYS);
        return Err(bad_input!(
            "{origin}: key `{key}`: unknown field `{key}`, expected one of {}{}",
            known.join(", "),
            toml_file::did_you_mean(key, &known, "")
        ));
    }
    let extra: Map<String, Value> = table
        .iter()
        .filter(|(k, _)| !defaults.contains_key(k.as_str()))
        .map(|(k, v)| Ok((k.clone(), serde_json::to_value(v)?)))
        .collect::<Result<_>>()?;
    let typed: C = toml_file::from_table(table, origin, overrides)?;
    let Value::Object(mut json) = serde_json::to_value(typed)? else { unreachable!() };
    json.retain(|_, v| !v.is_null()); // unset optional keys keep transformers' defaults
    json.extend(extra);
    Ok(json)
}

/// bos/eos/pad ids: from `tokenizer_config.json` when it names the tokens, else the usual
/// GPT-2/ChatML names. The pad token falls back to eos, as GPT-2 fine-tuning does.
fn special_token_ids(tokenizer: &Tokenizer, dir: &Path) -> [Option<u32>; 3] {
    let named = json_file::read_optional(&dir.join("tokenizer_config.json"));
    let lookup = |key: &str, fallbacks: &[&str]| -> Option<u32> {
        configured_token(&named, key)
            .into_iter()
            .chain(fallbacks.iter().copied())
            .find_map(|t| tokenizer.token_to_id(t))
    };
    let eos = lookup("eos_token", &["<|endoftext|>", "</s>", "<|im_end|>"]);
    let bos = lookup("bos_token", &["<|endoftext|>", "<s>"]).or(eos);
    let pad = lookup("pad_token", &["<|pad|>", "<pad>"]).or(eos);
    [bos, eos, pad]
}
