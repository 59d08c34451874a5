//! The stages' TOML configs (serde structs with documented defaults and `deny_unknown_fields`),
//! read through `toml_file` (`--set` overrides, errors that name the file and the key).

pub mod dpo;
pub mod moderate;
pub mod ppo;
pub mod reward;
pub mod sft;
pub mod train;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

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
    dpo::KtoConfig
);
