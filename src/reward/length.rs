//! How much of a transcript `rlhf reward eval`, `rlhf reward score` and `rlhf dpo eval` read
//! (issue 49): as much as the model was trained on — `data.max_len` from the reward (or DPO,
//! KTO) run's `rlhf.json`, and its `data.truncation` — so it is measured on sequences like the
//! ones it learned from, not on whole transcripts it never saw. `--max-len N` chooses, `--max-len 0` reads the whole
//! context window; a model with no reward run's `rlhf.json` (imported) is read at its window.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::bad_input;
use crate::checkpoint::{LINEAGE_FILE, Lineage};
use crate::config::train::resolve_max_len;
use crate::config::{dpo, reward};
use crate::data::sft::Truncation;

/// The length a reward model reads at, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLength {
    /// Tokens of prompt + response.
    pub max_len: usize,
    /// What happens to a longer transcript (the training run's rule).
    pub truncation: Truncation,
    /// `data.max_len` of the training run, when it is on record.
    pub trained: Option<usize>,
    /// `--max-len`, when given.
    pub flag: Option<usize>,
}

impl ReadLength {
    /// From `--max-len` (`flag`; 0: the whole window), else the model's `rlhf.json`, else
    /// its context window.
    pub fn resolve(model_dir: &Path, flag: Option<usize>, window: usize) -> Result<Self> {
        let trained = match model_dir.join(LINEAGE_FILE).is_file() {
            true => {
                let lineage = Lineage::read(model_dir).map_err(|e| bad_input!("{e:#}"))?;
                trained_length(&lineage, window)
            }
            false => None,
        };
        let max_len = match (flag, trained) {
            (Some(0), _) => window,
            (Some(n), _) if n > window => {
                return Err(bad_input!(
                    "--max-len {n} exceeds the model's context window of {window} tokens\nhint: --max-len 0 reads the whole window"
                ));
            }
            (Some(n), _) => n,
            (None, Some((n, _))) => n,
            (None, None) => window,
        };
        Ok(Self {
            max_len,
            truncation: trained.map_or(Truncation::Left, |(_, rule)| rule),
            trained: trained.map(|(n, _)| n),
            flag,
        })
    }

    /// `trained`, `--max-len` or `window`: where the length came from, for `--json`.
    pub fn source(&self) -> &'static str {
        match (self.flag, self.trained) {
            (Some(_), _) => "--max-len",
            (None, Some(_)) => "trained",
            (None, None) => "window",
        }
    }

    /// `128 tokens (trained at; --max-len to change)`.
    pub fn describe(&self) -> String {
        let trained = self.trained.map_or(String::new(), |n| format!("; trained at {n}"));
        let why = match (self.flag, self.trained) {
            (Some(0), _) => format!("--max-len 0: the whole context window{trained}"),
            (Some(_), _) => format!("--max-len{trained}"),
            (None, Some(_)) => "trained at; --max-len to change".into(),
            (None, None) => "the model's context window: no record of its training length".into(),
        };
        format!("{} tokens ({why})", self.max_len)
    }
}

/// `data.max_len` and `data.truncation` of a reward, DPO or KTO run, as the run resolved
/// them: unset, the length is the stage's default capped at the window.
fn trained_length(lineage: &Lineage, window: usize) -> Option<(usize, Truncation)> {
    let default = match lineage.stage.as_str() {
        "reward" => reward::DEFAULT_MAX_LEN,
        "dpo" | "kto" => dpo::DEFAULT_MAX_LEN,
        _ => return None,
    };
    let data = lineage.config.get("config")?.get("data")?;
    let set = match data.get("max_len") {
        Some(Value::Number(n)) => Some(n.as_u64()? as usize),
        None | Some(Value::Null) => None,
        Some(_) => return None,
    };
    let (max_len, _) = resolve_max_len(set, default, window).ok()?;
    let truncation = data
        .get("truncation")
        .and_then(|rule| serde_json::from_value(rule.clone()).ok())
        .unwrap_or(Truncation::Left);
    Some((max_len, truncation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lineage(stage: &str, data: Value) -> Lineage {
        Lineage::new(stage, json!({"config": {"data": data}, "overrides": []}))
    }

    #[test]
    fn a_reward_run_is_read_at_its_data_max_len() {
        let run = lineage("reward", json!({"max_len": 96, "truncation": "drop"}));
        assert_eq!(trained_length(&run, 1024), Some((96, Truncation::Drop)));
        // Unset, the run used the default, or the window when that is shorter.
        let unset = lineage("reward", json!({"max_len": null, "truncation": "left"}));
        assert_eq!(trained_length(&unset, 1024), Some((reward::DEFAULT_MAX_LEN, Truncation::Left)));
        let kto = lineage("kto", json!({"max_len": null, "truncation": "left"}));
        assert_eq!(trained_length(&kto, 1024), Some((dpo::DEFAULT_MAX_LEN, Truncation::Left)));
        assert_eq!(trained_length(&unset, 128), Some((128, Truncation::Left)));
        // Another stage's record says nothing about how a reward head was trained.
        assert_eq!(trained_length(&lineage("sft", json!({"max_len": 96})), 1024), None);
    }

    #[test]
    fn the_flag_wins_and_the_description_says_where_the_length_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let imported = ReadLength::resolve(dir.path(), None, 1024).unwrap();
        assert_eq!((imported.max_len, imported.source()), (1024, "window"));
        assert!(imported.describe().starts_with("1024 tokens (the model's context window"));

        lineage("reward", json!({"max_len": 96})).write(dir.path()).unwrap();
        let trained = ReadLength::resolve(dir.path(), None, 1024).unwrap();
        assert_eq!((trained.max_len, trained.source()), (96, "trained"));
        assert_eq!(trained.describe(), "96 tokens (trained at; --max-len to change)");
        let flag = ReadLength::resolve(dir.path(), Some(200), 1024).unwrap();
        assert_eq!(flag.describe(), "200 tokens (--max-len; trained at 96)");
        let whole = ReadLength::resolve(dir.path(), Some(0), 1024).unwrap();
        assert_eq!(whole.max_len, 1024);
        assert_eq!(
            whole.describe(),
            "1024 tokens (--max-len 0: the whole context window; trained at 96)"
        );
        let error = ReadLength::resolve(dir.path(), Some(2048), 1024).unwrap_err();
        assert!(format!("{error:#}").contains("exceeds the model's context window"));
    }
}
