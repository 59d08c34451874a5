//! One loader for every model directory, as `transformers`' `Auto*` classes and candle's
//! `Llama::load`: a directory is opened once (`config.json` read once), what it holds is
//! decided in one place ([`ModelDir::holds`]), and asking it for something it does not hold is
//! one error that says what was found and what was expected ([`ModelDir::wrong_kind`]).

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;
use tokenizers::Tokenizer;

use super::adapter::{Adapter, is_adapter_dir};
use super::bert::{Bert, Pooling};
use super::config::{Arch, HeadKind, ModelConfig};
use super::heads::{CausalLm, EncoderClassifier, ScalarModel};
use super::layers::normal_linear;
use super::pretrained::{Pretrained, add_body_prefix, fill, fill_keeping, init_causal_lm};
use super::weights::{self, NamedTensors};
use crate::bad_input;
use crate::data::tokenizer;

/// What a model directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// A GPT-2 or Llama-family language model (`*ForCausalLM`, or a bare body).
    CausalLm,
    /// A decoder with a one-output head: a reward or value model.
    Scalar,
    /// A decoder with a head of this many labels.
    DecoderClassifier(usize),
    /// A BERT-family encoder without a head (`BertModel`).
    Encoder,
    /// A BERT-family encoder with a head of this many labels (one: a cross-encoder reward
    /// model).
    EncoderClassifier(usize),
}

impl Holds {
    fn describe(self) -> String {
        match self {
            Holds::CausalLm => "a causal language model".into(),
            Holds::Scalar => "a scalar (reward or value) model".into(),
            Holds::DecoderClassifier(n) => format!("a decoder classifier with {n} labels"),
            Holds::Encoder => "a bare encoder".into(),
            Holds::EncoderClassifier(n) => format!("an encoder classifier with {n} labels"),
        }
    }
}

/// What a caller asks a directory for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    CausalLm,
    Scalar,
    DecoderClassifier(usize),
    /// An encoder classifier; `None` accepts any number of labels, and a bare encoder only
    /// with a number to give its fresh head.
    EncoderClassifier(Option<usize>),
    /// A classifier of this many labels to train: one saved with that many, or a backbone
    /// (a language model, a bare encoder) that gets a fresh head.
    Trainable(usize),
}

impl Wanted {
    fn describe(self) -> String {
        match self {
            Wanted::CausalLm => "a causal language model".into(),
            Wanted::Scalar => "a scalar (reward or value) model".into(),
            Wanted::DecoderClassifier(n) => format!("a decoder classifier with {n} labels"),
            Wanted::EncoderClassifier(_) => "an encoder classifier".into(),
            Wanted::Trainable(n) => format!("a backbone or a classifier with {n} labels"),
        }
    }
}

/// A classifier of either family.
#[allow(clippy::large_enum_variant)] // one per process
pub enum Classifier {
    /// A decoder read at its last token (`*ForSequenceClassification`).
    Decoder(ScalarModel),
    /// An encoder read at its pooled `[CLS]` (`BertForSequenceClassification`).
    Encoder(EncoderClassifier),
}

/// Whatever a directory holds, loaded (for `rlhf model inspect`).
#[allow(clippy::large_enum_variant)] // one per process
pub enum AutoModel {
    CausalLm(CausalLm),
    Classifier(Classifier),
    Encoder(Bert),
}

impl AutoModel {
    pub fn num_params(&self) -> usize {
        match self {
            Self::CausalLm(m) => m.num_params(),
            Self::Classifier(Classifier::Decoder(m)) => m.num_params(),
            Self::Classifier(Classifier::Encoder(m)) => m.num_params(),
            Self::Encoder(m) => m.num_params(),
        }
    }
}

/// A model directory, opened: its path and `config.json`.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub path: PathBuf,
    pub config: ModelConfig,
    /// A LoRA adapter directory: the adapter, and its base opened (it reads as the two merged).
    adapter: Option<(Adapter, Box<ModelDir>)>,
}

impl ModelDir {
    /// Reads `path/config.json`, or for an adapter directory its base's.
    pub fn open(path: &Path) -> Result<Self> {
        if !is_adapter_dir(path) {
            let config = ModelConfig::read(path)?;
            return Ok(Self { path: path.to_path_buf(), config, adapter: None });
        }
        let adapter = Adapter::open(path)?;
        let base = ModelDir::open(&adapter.base)?;
        let config = adapter.model_config(&base.config)?;
        Ok(Self { path: path.to_path_buf(), config, adapter: Some((adapter, Box::new(base))) })
    }

    /// The adapter, when this is an adapter directory.
    pub fn adapter(&self) -> Option<&Adapter> {
        self.adapter.as_ref().map(|(adapter, _)| adapter)
    }

    /// An encoder whose classifier reads `pooling` (see `ModelConfig::with_pooling`).
    pub fn with_pooling(mut self, pooling: Pooling) -> Result<Self> {
        self.config = self.config.with_pooling(pooling)?;
        Ok(self)
    }

    /// What the directory holds, from its config alone.
    pub fn holds(&self) -> Holds {
        match (&self.config.arch, self.config.head_kind()) {
            (Arch::Bert(_), HeadKind::Encoder) => Holds::Encoder,
            (Arch::Bert(_), _) => Holds::EncoderClassifier(self.config.num_labels()),
            (_, HeadKind::CausalLm | HeadKind::Encoder) => Holds::CausalLm,
            (_, HeadKind::Scalar) => Holds::Scalar,
            (_, HeadKind::Classifier) => Holds::DecoderClassifier(self.config.num_labels()),
        }
    }

    /// Whatever the directory holds.
    pub fn load(&self, device: &Device) -> Result<Pretrained<AutoModel>> {
        Ok(match self.holds() {
            Holds::CausalLm => self.causal_lm(device)?.map(AutoModel::CausalLm),
            Holds::Encoder => {
                self.encoder_classifier(Some(1), device)?.map(|m| AutoModel::Encoder(m.body))
            }
            _ => {
                let labels = self.config.num_labels();
                self.trainable_classifier(labels, device)?.map(AutoModel::Classifier)
            }
        })
    }

    /// A causal LM (`GPT2LMHeadModel`, or a bare `GPT2Model` with a tied head).
    pub fn causal_lm(&self, device: &Device) -> Result<Pretrained<CausalLm>> {
        if self.holds() != Holds::CausalLm {
            return Err(self.wrong_kind(Wanted::CausalLm));
        }
        let (tokenizer, mut tensors) = self.read()?;
        let model = init_causal_lm(&self.config, device)?;
        let model = fill(model, &self.config, &mut tensors, device, &self.path)?;
        Ok(self.loaded(model, tokenizer))
    }

    /// A scalar model (`*ForSequenceClassification` with `num_labels = 1`).
    pub fn scalar_model(&self, device: &Device) -> Result<Pretrained<ScalarModel>> {
        if self.holds() != Holds::Scalar {
            return Err(self.wrong_kind(Wanted::Scalar));
        }
        self.decoder_with_head(1, device)
    }

    /// A decoder classifier (`*ForSequenceClassification`) with `labels` outputs.
    pub fn decoder_classifier(
        &self,
        labels: usize,
        device: &Device,
    ) -> Result<Pretrained<ScalarModel>> {
        let holds = self.holds();
        if holds != Holds::DecoderClassifier(labels) && !(labels == 1 && holds == Holds::Scalar) {
            return Err(self.wrong_kind(Wanted::DecoderClassifier(labels)));
        }
        self.decoder_with_head(labels, device)
    }

    /// An encoder classifier (`BertForSequenceClassification`), or a bare encoder (`BertModel`,
    /// e.g. all-MiniLM-L6-v2) with a fresh head of `labels` outputs (N(0, initializer_range)
    /// weights, zero bias, as `transformers` initialises `classifier`).
    pub fn encoder_classifier(
        &self,
        labels: Option<usize>,
        device: &Device,
    ) -> Result<Pretrained<EncoderClassifier>> {
        let labels = match (self.holds(), labels) {
            (Holds::Encoder, Some(n)) => n,
            (Holds::EncoderClassifier(has), wanted) if wanted.is_none_or(|n| n == has) => has,
            _ => return Err(self.wrong_kind(Wanted::EncoderClassifier(labels))),
        };
        let Arch::Bert(bert) = &self.config.arch else { unreachable!("holds an encoder") };
        let (tokenizer, mut tensors) = self.read()?;
        let (d, std) = (self.config.hidden_size(), self.config.initializer_range());
        let model = EncoderClassifier {
            body: bert.init(device)?,
            classifier: normal_linear(d, labels, true, std, device),
        };
        let headless = self.holds() == Holds::Encoder;
        let model = fill_keeping(model, &self.config, &mut tensors, device, &self.path, &|key| {
            headless && key.starts_with("classifier.")
        })?;
        Ok(self.loaded(model, tokenizer))
    }

    /// A classifier of `labels` outputs to train: the one saved here, or this backbone — a
    /// bare encoder, or a causal LM whose LM head is replaced (InstructGPT's reward model) —
    /// with a fresh head.
    pub fn trainable_classifier(
        &self,
        labels: usize,
        device: &Device,
    ) -> Result<Pretrained<Classifier>> {
        match self.holds() {
            Holds::Encoder | Holds::EncoderClassifier(_) => {
                let loaded = self.encoder_classifier(Some(labels), device)?;
                Ok(loaded.map(Classifier::Encoder))
            }
            Holds::CausalLm => {
                let loaded = self.causal_lm(device)?;
                let (d, std) = (self.config.hidden_size(), self.config.initializer_range());
                Ok(loaded.map(|lm| {
                    Classifier::Decoder(ScalarModel::from_decoder(lm.body, d, labels, std, device))
                }))
            }
            Holds::Scalar | Holds::DecoderClassifier(_) => {
                let loaded = self
                    .decoder_classifier(labels, device)
                    .map_err(|_| self.wrong_kind(Wanted::Trainable(labels)))?;
                Ok(loaded.map(Classifier::Decoder))
            }
        }
    }

    fn decoder_with_head(&self, labels: usize, device: &Device) -> Result<Pretrained<ScalarModel>> {
        let (tokenizer, mut tensors) = self.read()?;
        let (d, std) = (self.config.hidden_size(), self.config.initializer_range());
        let body = self.config.init_decoder(device)?;
        let model = ScalarModel::from_decoder(body, d, labels, std, device);
        let model = fill(model, &self.config, &mut tensors, device, &self.path)?;
        Ok(self.loaded(model, tokenizer))
    }

    /// The tokenizer (checked against the embedding) and the raw tensors.
    fn read(&self) -> Result<(Option<Tokenizer>, NamedTensors)> {
        let dir = &self.path;
        if let Some((adapter, base)) = &self.adapter {
            let (base_tokenizer, mut tensors) = base.read()?;
            adapter.merge_into(&mut tensors, self.config.layout())?;
            let tokenizer = match dir.join("tokenizer.json").is_file() {
                true => Some(tokenizer::read(dir)?),
                false => base_tokenizer,
            };
            return Ok((tokenizer, tensors));
        }
        let tokenizer = if dir.join("tokenizer.json").is_file() {
            let tokenizer = tokenizer::read(dir)?;
            tokenizer::check_fits(&tokenizer, self.config.vocab_size(), dir)?;
            Some(tokenizer)
        } else {
            None
        };
        let mut tensors = weights::read_model_weights(dir)?;
        add_body_prefix(&mut tensors, &self.config);
        Ok((tokenizer, tensors))
    }

    fn loaded<M>(&self, model: M, tokenizer: Option<Tokenizer>) -> Pretrained<M> {
        Pretrained { model, config: self.config.clone(), tokenizer }
    }

    /// The one error for a directory that does not hold what was asked for: what it holds,
    /// what was expected, and where to find that.
    pub fn wrong_kind(&self, wanted: Wanted) -> anyhow::Error {
        let dir = self.path.display();
        let model_type = self.config.model_type();
        let message = match (self.holds(), wanted) {
            (Holds::Scalar, Wanted::CausalLm) => "this is a scalar (reward or value) model, not a causal language model\nhint: pass the SFT or base model directory here".to_string(),
            (Holds::Encoder | Holds::EncoderClassifier(_), Wanted::CausalLm) => "a BERT encoder is not a language model\nhint: pass a GPT-2 or Llama-family directory; encoders serve as reward and moderation backbones".to_string(),
            (Holds::DecoderClassifier(n), Wanted::CausalLm) => format!(
                "a classifier with {n} labels, not a causal language model\nhint: pass the SFT or base model directory here"
            ),
            (_, Wanted::Scalar) => "not a scalar model (expected architectures = [\"*ForSequenceClassification\"] with one label)\nhint: pass a directory written by `rlhf reward train`".to_string(),
            (_, Wanted::DecoderClassifier(labels)) => format!(
                "not a decoder classifier with {labels} labels (architectures = [\"*ForSequenceClassification\"])"
            ),
            (Holds::Encoder, Wanted::EncoderClassifier(None)) => {
                "a bare encoder has no classifier head".to_string()
            }
            (Holds::EncoderClassifier(has), Wanted::EncoderClassifier(Some(n))) => {
                format!("the classifier has {has} labels, not {n}")
            }
            (_, Wanted::EncoderClassifier(_)) => format!(
                "a {model_type} model is not an encoder\nhint: pass a BERT-family directory (e.g. models/minilm)"
            ),
            (Holds::Scalar, Wanted::Trainable(_)) => "a reward model (one score) is not a moderation classifier\nhint: start from an encoder (models/minilm), an SFT or base model, or a `rlhf moderate train` checkpoint".to_string(),
            (Holds::DecoderClassifier(n), Wanted::Trainable(1)) => format!(
                "a classifier with {n} labels cannot become a reward model\nhint: start from an SFT checkpoint, a base model or an encoder"
            ),
            (holds, wanted) => {
                format!("{} where {} was expected", holds.describe(), wanted.describe())
            }
        };
        bad_input!("{dir}: {message}")
    }
}

impl<M> Pretrained<M> {
    /// The same model, changed by `f` (a head put on, an enum wrapped around it).
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> Pretrained<N> {
        Pretrained { model: f(self.model), config: self.config, tokenizer: self.tokenizer }
    }
}

/// `ModelDir::open(dir)?.causal_lm(device)`.
pub fn load_causal_lm(dir: &Path, device: &Device) -> Result<Pretrained<CausalLm>> {
    ModelDir::open(dir)?.causal_lm(device)
}

/// `ModelDir::open(dir)?.scalar_model(device)`.
pub fn load_scalar_model(dir: &Path, device: &Device) -> Result<Pretrained<ScalarModel>> {
    ModelDir::open(dir)?.scalar_model(device)
}

/// `ModelDir::open(dir)?.encoder_classifier(labels, device)`.
pub fn load_encoder_classifier(
    dir: &Path,
    labels: Option<usize>,
    device: &Device,
) -> Result<Pretrained<EncoderClassifier>> {
    ModelDir::open(dir)?.encoder_classifier(labels, device)
}
