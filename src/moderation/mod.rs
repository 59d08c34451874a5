//! The moderation classifier as a library: load a `moderate` checkpoint and screen texts, as
//! `chat` screens what goes in and out. A score is the calibrated sigmoid of a category's
//! logit; a text longer than the model's window is read in overlapping chunks and each category
//! takes its highest chunk (a harmful passage anywhere flags the text); a sub-category that is
//! flagged flags its parent (`hate/threatening` implies `hate`).

pub mod calibration;
pub mod metrics;
pub mod net;
pub mod screen;
pub mod train;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use crate::data::moderation::{CATEGORIES, IMPLIES, NUM_CATEGORIES};
use crate::data::scoring::{Sequence, SequenceBatch, run_sorted};
use crate::model::ModelDir;
use crate::model::config::{Arch, ModelConfig};
use crate::{bad_input, json_file};
use calibration::Platt;
use metrics::ThresholdRule;
use net::ModerationNet;

/// Thresholds and reading settings saved with a moderation checkpoint.
pub const SETTINGS_FILE: &str = "moderation.json";

/// Tokens shared by consecutive chunks of a long text.
const CHUNK_OVERLAP: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModerationSettings {
    /// Decision threshold per category name; `null` for a category that had no positive
    /// training example, which is never flagged.
    pub thresholds: Map<String, Value>,
    pub threshold_rule: ThresholdRule,
    pub target_precision: f64,
    /// Tokens per chunk (an encoder's `[CLS]` and `[SEP]` included).
    pub max_len: usize,
    /// Per category name, the scaling of its logit into a calibrated probability (none:
    /// the plain sigmoid, as checkpoints written before calibration have it).
    #[serde(default)]
    pub calibration: BTreeMap<String, Platt>,
}

impl ModerationSettings {
    pub fn new(
        thresholds: &[Option<f32>; NUM_CATEGORIES],
        calibration: &[Platt; NUM_CATEGORIES],
        rule: ThresholdRule,
        target: f64,
        max_len: usize,
    ) -> Self {
        let thresholds = CATEGORIES
            .iter()
            .zip(thresholds)
            .map(|((_, name), t)| (name.to_string(), t.map(f64::from).into()))
            .collect();
        let calibration = CATEGORIES
            .iter()
            .zip(calibration)
            .map(|((_, name), p)| (name.to_string(), *p))
            .collect();
        Self { thresholds, threshold_rule: rule, target_precision: target, max_len, calibration }
    }

    /// Calibration in category order.
    pub fn calibration_values(&self) -> [Platt; NUM_CATEGORIES] {
        CATEGORIES.map(|(_, name)| self.calibration.get(name).copied().unwrap_or_default())
    }

    /// Thresholds in category order; a disabled category's is +∞.
    pub fn threshold_values(&self) -> Result<[f32; NUM_CATEGORIES]> {
        let mut values = [0.5; NUM_CATEGORIES];
        for (value, (_, name)) in values.iter_mut().zip(CATEGORIES) {
            *value = match self.thresholds.get(name) {
                Some(Value::Null) => f32::INFINITY,
                Some(Value::Number(n)) => n.as_f64().unwrap_or(0.5) as f32,
                _ => return Err(anyhow!("{SETTINGS_FILE}: no threshold for `{name}`")),
            };
        }
        Ok(values)
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        json_file::write(&dir.join(SETTINGS_FILE), self)
    }
}

/// A verdict on one text, in OpenAI's moderation response shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Moderation {
    pub flagged: bool,
    pub categories: [bool; NUM_CATEGORIES],
    pub scores: [f32; NUM_CATEGORIES],
}

impl Moderation {
    /// Applies the thresholds and the hierarchy to category scores.
    pub fn new(mut scores: [f32; NUM_CATEGORIES], thresholds: &[f32; NUM_CATEGORIES]) -> Self {
        let mut categories: [bool; NUM_CATEGORIES] =
            std::array::from_fn(|i| scores[i] >= thresholds[i]);
        for (child, parent) in IMPLIES {
            categories[parent] |= categories[child];
            // A category never flagged (no positive training example) was never learnt either.
            if thresholds[child].is_finite() {
                scores[parent] = scores[parent].max(scores[child]);
            }
        }
        Self { flagged: categories.iter().any(|&c| c), categories, scores }
    }

    /// The flagged categories by name with their scores, in category order: what a refusal
    /// names and what scores shown beside it list, so the two always agree.
    pub fn flagged_categories(&self) -> Vec<(&'static str, f32)> {
        CATEGORIES
            .iter()
            .zip(self.categories.iter().zip(self.scores))
            .filter(|(_, (flagged, _))| **flagged)
            .map(|((_, name), (_, score))| (*name, score))
            .collect()
    }

    /// "harassment and self-harm": the flagged categories.
    pub fn category_names(&self) -> String {
        let names: Vec<&str> =
            self.flagged_categories().into_iter().map(|(name, _)| name).collect();
        match names.as_slice() {
            [] => "unsafe content".into(),
            [one] => one.to_string(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    }

    /// The answer to a flagged message (the chat's and the server's).
    pub fn refusal(&self) -> String {
        format!(
            "Sorry, I can't respond to that: your message was flagged for {}.",
            self.category_names()
        )
    }

    /// `{"flagged": …, "categories": {"sexual": …, …}, "category_scores": {…}}` (OpenAI's key
    /// order).
    pub fn to_json(&self) -> Value {
        const ORDER: [usize; NUM_CATEGORIES] = [0, 1, 3, 4, 5, 6, 7, 2];
        let name = |i: usize| CATEGORIES[i].1.to_string();
        let categories: Map<String, Value> =
            ORDER.iter().map(|&i| (name(i), self.categories[i].into())).collect();
        let scores: Map<String, Value> =
            ORDER.iter().map(|&i| (name(i), (self.scores[i] as f64).into())).collect();
        serde_json::json!({ "flagged": self.flagged, "categories": categories, "category_scores": scores })
    }
}

/// A loaded moderation classifier.
pub struct Moderator {
    pub model: ModerationNet,
    pub tokenizer: Tokenizer,
    pub settings: ModerationSettings,
    thresholds: [f32; NUM_CATEGORIES],
    calibration: [Platt; NUM_CATEGORIES],
    chunker: Chunker,
    device: Device,
}

impl Moderator {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let settings_file = dir.join(SETTINGS_FILE);
        if !settings_file.is_file() {
            return Err(bad_input!(
                "{}: not a moderation model (no {SETTINGS_FILE})\nhint: pass a directory written by `rlhf moderate train`",
                dir.display()
            ));
        }
        let settings: ModerationSettings =
            json_file::read(&settings_file).map_err(|e| bad_input!("{e:#}"))?;
        let thresholds =
            settings.threshold_values().map_err(|e| bad_input!("{}: {e}", dir.display()))?;
        let (model, config, tokenizer) = ModerationNet::load(&ModelDir::open(dir)?, device)?;
        let chunker = Chunker::new(&config, &tokenizer, settings.max_len)?;
        let calibration = settings.calibration_values();
        Ok(Self {
            model,
            tokenizer,
            settings,
            thresholds,
            calibration,
            chunker,
            device: device.clone(),
        })
    }

    /// A verdict per text.
    pub fn moderate(&self, texts: &[&str]) -> Result<Vec<Moderation>> {
        let scores = self.scores(texts)?;
        Ok(scores.into_iter().map(|s| Moderation::new(s, &self.thresholds)).collect())
    }

    /// Calibrated per-category probabilities (before thresholds and hierarchy).
    pub fn scores(&self, texts: &[&str]) -> Result<Vec<[f32; NUM_CATEGORIES]>> {
        let logits = category_logits(&self.model, &self.chunker, texts, &self.device)?;
        Ok(calibrated(&logits, &self.calibration))
    }
}

/// Probabilities from per-category logits.
pub fn calibrated(
    logits: &[[f32; NUM_CATEGORIES]],
    calibration: &[Platt; NUM_CATEGORIES],
) -> Vec<[f32; NUM_CATEGORIES]> {
    logits.iter().map(|row| std::array::from_fn(|c| calibration[c].probability(row[c]))).collect()
}

/// Per-category logits of each text, the highest over its chunks (calibration keeps their
/// order, so the highest chunk's score is the highest score).
pub fn category_logits(
    model: &ModerationNet,
    chunker: &Chunker,
    texts: &[&str],
    device: &Device,
) -> Result<Vec<[f32; NUM_CATEGORIES]>> {
    let mut sequences = Vec::new();
    let mut owner = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        for chunk in chunker.chunks(text)? {
            sequences.push(chunk);
            owner.push(i);
        }
    }
    let refs: Vec<&Sequence> = sequences.iter().collect();
    let logits =
        run_sorted(&refs, chunker.pad, device, |batch: &SequenceBatch, _| model.logits(batch));
    let mut scores = vec![[f32::NEG_INFINITY; NUM_CATEGORIES]; texts.len()];
    for (row, i) in logits.into_iter().zip(owner) {
        for (best, value) in scores[i].iter_mut().zip(row) {
            *best = best.max(value);
        }
    }
    Ok(scores)
}

/// Splits a text into windows of at most `max_len` tokens: `[CLS] … [SEP]` for an encoder,
/// plain token windows (the tokenizer's own specials, as `transformers` adds them) for a
/// decoder.
pub struct Chunker {
    tokenizer: Tokenizer,
    /// Tokens per chunk, `[CLS]` and `[SEP]` included.
    pub max_len: usize,
    /// `[CLS]` and `[SEP]` (encoders only).
    frame: Option<(u32, u32)>,
    pub pad: u32,
}

impl Chunker {
    pub fn new(config: &ModelConfig, tokenizer: &Tokenizer, max_len: usize) -> Result<Self> {
        let id = |token: &str| {
            tokenizer.token_to_id(token).ok_or_else(|| {
                bad_input!("the tokenizer has no {token} token; a BERT encoder needs a BERT-style (WordPiece) tokenizer")
            })
        };
        if max_len <= CHUNK_OVERLAP + 2 {
            return Err(bad_input!(
                "max_len {max_len} is too short to read text in chunks (at least {})",
                CHUNK_OVERLAP + 3
            ));
        }
        let (frame, pad) = match config.arch {
            Arch::Bert(_) => (Some((id("[CLS]")?, id("[SEP]")?)), id("[PAD]").unwrap_or(0)),
            _ => (None, config.pad_id(tokenizer)),
        };
        Ok(Self { tokenizer: tokenizer.clone(), max_len, frame, pad })
    }

    /// The first window only (training reads the head of a long text).
    pub fn head(&self, text: &str) -> Result<Sequence> {
        Ok(self.chunks(text)?.swap_remove(0))
    }

    pub fn chunks(&self, text: &str) -> Result<Vec<Sequence>> {
        let encoding = self
            .tokenizer
            .encode(text, self.frame.is_none())
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        let mut ids = encoding.get_ids();
        if ids.is_empty() && self.frame.is_none() {
            ids = std::slice::from_ref(&self.pad); // a decoder reads one token of an empty text
        }
        let body = self.max_len - if self.frame.is_some() { 2 } else { 0 };
        let mut chunks = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + body).min(ids.len());
            let mut chunk = Vec::with_capacity(end - start + 2);
            chunk.extend(self.frame.map(|(cls, _)| cls));
            chunk.extend_from_slice(&ids[start..end]);
            chunk.extend(self.frame.map(|(_, sep)| sep));
            chunks.push(Sequence { type_ids: vec![0; chunk.len()], ids: chunk });
            if end == ids.len() {
                return Ok(chunks);
            }
            start = end - CHUNK_OVERLAP;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_categories_flag_their_parents_and_the_json_has_openais_shape() {
        let mut scores = [0.0; NUM_CATEGORIES];
        scores[6] = 0.9; // hate/threatening
        scores[1] = 0.2; // hate
        let verdict = Moderation::new(scores, &[0.5; NUM_CATEGORIES]);
        assert!(verdict.flagged && verdict.categories[1] && verdict.categories[6]);
        assert_eq!(verdict.scores[1], 0.9);
        let json = verdict.to_json();
        let keys: Vec<&String> = json["categories"].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "sexual",
                "hate",
                "harassment",
                "self-harm",
                "sexual/minors",
                "hate/threatening",
                "violence/graphic",
                "violence"
            ]
        );
        assert_eq!(json["category_scores"].as_object().unwrap().len(), 8);
        assert_eq!(json["flagged"], true);
        assert!(!Moderation::new([0.1; NUM_CATEGORIES], &[0.5; NUM_CATEGORIES]).flagged);
    }

    #[test]
    fn long_texts_are_read_in_overlapping_windows() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/minilm");
        let tokenizer =
            crate::data::tokenizer::read(&dir).expect("models/minilm: run scripts/setup.sh");
        let config = ModelConfig::read(&dir).unwrap();
        let chunker = Chunker::new(&config, &tokenizer, 40).unwrap();
        let (cls, sep) = chunker.frame.unwrap();
        let text = (0..100).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ");
        let all = tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
        let chunks = chunker.chunks(&text).unwrap();
        assert!(chunks.len() > 1);
        let mut covered = 0;
        for chunk in &chunks {
            assert!(chunk.ids.len() <= 40);
            assert_eq!((chunk.ids[0], *chunk.ids.last().unwrap()), (cls, sep));
            let inner = &chunk.ids[1..chunk.ids.len() - 1];
            let at = covered.max(CHUNK_OVERLAP) - CHUNK_OVERLAP;
            let at = if covered == 0 { 0 } else { at };
            assert_eq!(inner, &all[at..at + inner.len()]);
            covered = at + inner.len();
        }
        assert_eq!(covered, all.len(), "the last window reaches the end");
        assert_eq!(chunker.chunks("short").unwrap().len(), 1);
    }
}
