//! The network behind a moderation classifier: a BERT-family encoder with a multi-label head on
//! its pooled `[CLS]` vector (MiniLM, the default), or a decoder — an SFT model, say — with a
//! multi-label `score` head read at the last token. Both are saved as
//! `*ForSequenceClassification` with `problem_type = "multi_label_classification"`.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use tokenizers::Tokenizer;

use crate::bad_input;
use crate::data::moderation::{CATEGORIES, NUM_CATEGORIES};
use crate::data::scoring::SequenceBatch;
use crate::model::ModelConfig;
use crate::model::PaddedBatch;
use crate::model::auto::{Classifier, ModelDir};
use crate::model::heads::{EncoderClassifier, ScalarModel};
use crate::model::pretrained::save_classifier;

#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // one per process
pub enum ModerationNet {
    Encoder(EncoderClassifier),
    Decoder(ScalarModel),
}

impl ModerationNet {
    /// The eight-category classifier in `dir`, or a backbone with a fresh eight-output head
    /// (a bare encoder, or a causal language model whose LM head is replaced).
    pub fn load(dir: &ModelDir, device: &Device) -> Result<(Self, ModelConfig, Tokenizer)> {
        let loaded = dir.trainable_classifier(NUM_CATEGORIES, device)?;
        let net = match loaded.model {
            Classifier::Encoder(model) => Self::Encoder(model),
            Classifier::Decoder(model) => Self::Decoder(model),
        };
        let tokenizer = loaded
            .tokenizer
            .ok_or_else(|| bad_input!("{}: no tokenizer.json", dir.path.display()))?;
        Ok((net, loaded.config, tokenizer))
    }

    /// Logits `[B, 8]`: at `[CLS]` for an encoder, at the last token that is not padding for a
    /// decoder (where `transformers` reads it).
    pub fn logits(&self, batch: &SequenceBatch) -> Tensor<2> {
        match self {
            Self::Encoder(model) => model.forward(
                batch.input_ids.clone(),
                batch.token_type_ids.clone(),
                batch.attention_mask.clone(),
            ),
            Self::Decoder(model) => model.logits_at(
                batch.input_ids.clone(),
                &PaddedBatch::new(batch.attention_mask.clone()),
                batch.last_non_pad.clone(),
            ),
        }
    }

    /// Trains the head and the top `n` blocks only (0: everything).
    pub fn train_top_layers(self, n: usize) -> Self {
        match self {
            Self::Encoder(model) => Self::Encoder(model.train_top_layers(n)),
            Self::Decoder(model) => Self::Decoder(model.train_top_layers(n)),
        }
    }

    /// Longest sequence it reads.
    pub fn max_len(&self) -> usize {
        match self {
            Self::Encoder(model) => model.body.max_positions(),
            Self::Decoder(model) => model.body.max_positions(),
        }
    }

    /// Writes it as a multi-label `*ForSequenceClassification` with the category names.
    pub fn save(&self, config: &ModelConfig, tokenizer_from: &Path, dir: &Path) -> Result<()> {
        let names: Vec<String> = CATEGORIES.iter().map(|(_, name)| name.to_string()).collect();
        let problem = Some("multi_label_classification");
        let from = Some(tokenizer_from);
        match self {
            Self::Encoder(model) => save_classifier(model, config, &names, problem, from, dir),
            Self::Decoder(model) => save_classifier(model, config, &names, problem, from, dir),
        }
    }
}
