//! The stages' TOML configs (serde structs with documented defaults and `deny_unknown_fields`),
//! read through `toml_file` (`--set` overrides, errors that name the file and the key).

pub mod dpo;
pub mod grpo;
pub mod moderate;
pub mod ppo;
pub mod reward;
pub mod sft;
pub mod train;

use std::path::Path;

use anyhow::{Result, anyhow};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use crate::toml_file::{load, parse};
use train::{OutputConfig, TrainConfig};

/// What every training stage's config has: its `[train]` and `[output]` sections, and a check
/// of the whole that runs before any tensor work.
pub trait StageConfig: DeserializeOwned + Serialize {
    fn train(&self) -> &TrainConfig;
    fn output(&self) -> &OutputConfig;
    /// The cross-field rules serde cannot express; the message names the key.
    fn validate(&self) -> Result<(), String>;
    /// The files and model directories the config names, checked before any work.
    fn paths(&self) -> Vec<NamedPath<'_>>;
}

/// A path a config names, with its key.
pub struct NamedPath<'a> {
    pub key: &'static str,
    pub path: &'a Path,
    /// A model directory (else a file).
    pub model: bool,
}

impl<'a> NamedPath<'a> {
    pub fn file(key: &'static str, path: &'a Path) -> Self {
        Self { key, path, model: false }
    }

    pub fn model(key: &'static str, path: &'a Path) -> Self {
        Self { key, path, model: true }
    }
}

macro_rules! stage_config {
    ($($config:ty),*) => {$(
        impl StageConfig for $config {
            fn train(&self) -> &TrainConfig {
                &self.train
            }
            fn output(&self) -> &OutputConfig {
                &self.output
            }
            fn validate(&self) -> Result<(), String> {
                <$config>::validate(self)
            }
            fn paths(&self) -> Vec<NamedPath<'_>> {
                <$config>::paths(self)
            }
        }
    )*};
}
stage_config!(
    sft::SftConfig,
    reward::RewardConfig,
    ppo::PpoConfig,
    moderate::ModerateConfig,
    dpo::DpoConfig,
    dpo::KtoConfig,
    grpo::GrpoConfig
);

/// A config as the TOML a stage reads back: a `[section]` per struct, every key in the
/// struct's order, and an unset optional key as a comment (`# head_lr =  (unset)`).
pub fn to_toml<C: Serialize>(config: &C) -> Result<String> {
    let mut out = String::new();
    write_table(&mut out, &serde_json::to_value(config)?, "")?;
    Ok(out)
}

/// The keys of `table` (a JSON object), then its sub-tables under `[path.key]` headers.
fn write_table(out: &mut String, table: &Value, path: &str) -> Result<()> {
    let Value::Object(fields) = table else {
        return Err(anyhow!("a config serializes to a table, not {table}"));
    };
    for (key, value) in fields.iter().filter(|(_, v)| !v.is_object()) {
        let key = toml_key(key);
        match value {
            Value::Null => out.push_str(&format!("# {key} =  (unset)\n")),
            value => {
                let literal = toml::Value::try_from(value)
                    .map_err(|e| anyhow!("`{key}` has no TOML form: {e}"))?;
                out.push_str(&format!("{key} = {literal}\n"));
            }
        }
    }
    for (key, value) in fields.iter().filter(|(_, v)| v.is_object()) {
        let path =
            if path.is_empty() { toml_key(key) } else { format!("{path}.{}", toml_key(key)) };
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("[{path}]\n"));
        write_table(out, value, &path)?;
    }
    Ok(())
}

/// A bare key when TOML allows one, else a quoted one.
fn toml_key(key: &str) -> String {
    let bare =
        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c));
    if bare { key.to_string() } else { Value::String(key.into()).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sft::SftConfig;

    /// Issue 48: there was no way to see a stage's keys and defaults but to read the source.
    #[test]
    fn printed_configs_read_back_the_same() {
        let defaults = SftConfig::default();
        let text = to_toml(&defaults).unwrap();
        assert!(text.starts_with("[model]\n# base =  (unset)\n"), "{text}");
        assert!(text.contains("\n[train]\nepochs = 1\n"), "{text}");
        assert!(text.contains("lr = 0.0001\n"), "{text}");
        assert!(text.contains("# max_len =  (unset)\n"), "{text}");
        let read: SftConfig = parse(&text, "printed", &[]).unwrap();
        assert_eq!(read, defaults);
        // Each shipped config, printed, reads back to what prints the same.
        fn round_trip<C: StageConfig>(file: &str) {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs").join(file);
            let text = to_toml(&load::<C>(&path, &[]).unwrap()).unwrap();
            let again = to_toml(&parse::<C>(&text, file, &[]).unwrap()).unwrap();
            assert_eq!(again, text, "{file}");
        }
        round_trip::<SftConfig>("sft.toml");
        round_trip::<reward::RewardConfig>("reward.toml");
        round_trip::<ppo::PpoConfig>("ppo.toml");
        round_trip::<moderate::ModerateConfig>("moderate.toml");
        round_trip::<dpo::DpoConfig>("dpo.toml");
        round_trip::<dpo::KtoConfig>("kto.toml");
    }
}
