//! Stage configs: a TOML text and `--set` overrides, NUL-separated, read and validated as each
//! stage reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rlhf::config::sft::SftConfig;
use rlhf::config::{moderate::ModerateConfig, parse, ppo::PpoConfig, reward::RewardConfig};

fuzz_target!(|text: &str| {
    let mut parts = text.split('\0');
    let toml = parts.next().unwrap_or_default();
    let overrides: Vec<String> = parts.map(String::from).collect();
    if let Ok(config) = parse::<SftConfig>(toml, "fuzz.toml", &overrides) {
        let _ = config.validate();
    }
    if let Ok(config) = parse::<RewardConfig>(toml, "fuzz.toml", &overrides) {
        let _ = config.validate();
    }
    if let Ok(config) = parse::<PpoConfig>(toml, "fuzz.toml", &overrides) {
        let _ = config.validate();
    }
    if let Ok(config) = parse::<ModerateConfig>(toml, "fuzz.toml", &overrides) {
        let _ = config.validate();
    }
});
