//! `from_pretrained` / `save_pretrained`: Hugging Face model directories in and out.
//!
//! A directory holds `config.json`, `model.safetensors` (or shards + index), `tokenizer.json`,
//! `tokenizer_config.json` and, for causal LMs, `generation_config.json`. Tensor names and
//! layouts are exactly those of `transformers`, so what `rlhf` writes loads with
//! `AutoModelForCausalLM` / `AutoModelForSequenceClassification`, and what they wrote loads here.

use std::path::Path;

use anyhow::Result;
use burn::module::Module;
use burn::prelude::*;
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use super::config::{Arch, HeadKind, ModelConfig};
use super::heads::{CausalLm, EncoderClassifier, ScalarModel};
use super::layers::normal_linear;
use super::naming::{load_module_keeping, named_tensors};
use super::weights::{self, NamedTensors};
use crate::data::tokenizer;
use crate::model::config::token_ids;
use crate::{bad_input, json_file};

/// A loaded model with the config and tokenizer of its directory.
pub struct Pretrained<M> {
    pub model: M,
    pub config: ModelConfig,
    /// `None` when the directory has no `tokenizer.json` (weights-only checkpoints).
    pub tokenizer: Option<Tokenizer>,
}

/// Loads a causal LM (`GPT2LMHeadModel`, or a bare `GPT2Model` with a tied head).
pub fn load_causal_lm(dir: &Path, device: &Device) -> Result<Pretrained<CausalLm>> {
    let (config, tokenizer, mut tensors) = open(dir)?;
    if config.head_kind() == HeadKind::Scalar {
        return Err(bad_input!(
            "{}: this is a scalar (reward or value) model, not a causal language model\nhint: pass the SFT or base model directory here",
            dir.display()
        ));
    }
    if let Arch::Bert(_) = config.arch {
        return Err(bad_input!(
            "{}: a BERT encoder is not a language model\nhint: pass a GPT-2 or Llama-family directory; encoders serve as reward and moderation backbones",
            dir.display()
        ));
    }
    let model = fill(init_causal_lm(&config, device)?, &config, &mut tensors, device, dir)?;
    Ok(Pretrained { model, config, tokenizer })
}

/// A randomly initialised causal LM for `config` (lazy: loading over it draws nothing).
pub fn init_causal_lm(config: &ModelConfig, device: &Device) -> Result<CausalLm> {
    let lm_head = (!config.tied_embeddings()).then(|| {
        normal_linear(
            config.hidden_size(),
            config.vocab_size(),
            false,
            config.initializer_range(),
            device,
        )
    });
    Ok(CausalLm { body: config.init_decoder(device)?, lm_head })
}

/// A causal LM from tensors already in memory under their Hugging Face names (a converted
/// GGUF file), checked as strictly as a directory's; `source` names them in errors.
pub fn causal_lm_from_tensors(
    config: &ModelConfig,
    mut tensors: NamedTensors,
    device: &Device,
    source: &Path,
) -> Result<CausalLm> {
    fill(init_causal_lm(config, device)?, config, &mut tensors, device, source)
}

/// Loads a scalar model (`*ForSequenceClassification` with `num_labels = 1`).
pub fn load_scalar_model(dir: &Path, device: &Device) -> Result<Pretrained<ScalarModel>> {
    let (config, tokenizer, tensors) = open(dir)?;
    if config.head_kind() != HeadKind::Scalar {
        return Err(bad_input!(
            "{}: not a scalar model (expected architectures = [\"*ForSequenceClassification\"] with one label)\nhint: pass a directory written by `rlhf reward train`",
            dir.display()
        ));
    }
    fill_classifier(config, tokenizer, tensors, 1, device, dir)
}

/// Loads a decoder classifier (`*ForSequenceClassification`) with `labels` outputs.
pub fn load_decoder_classifier(
    dir: &Path,
    labels: usize,
    device: &Device,
) -> Result<Pretrained<ScalarModel>> {
    let (config, tokenizer, tensors) = open(dir)?;
    if config.head_kind() != HeadKind::Classifier || config.num_labels() != labels {
        return Err(bad_input!(
            "{}: not a decoder classifier with {labels} labels (architectures = [\"*ForSequenceClassification\"])",
            dir.display()
        ));
    }
    fill_classifier(config, tokenizer, tensors, labels, device, dir)
}

fn fill_classifier(
    config: ModelConfig,
    tokenizer: Option<Tokenizer>,
    mut tensors: NamedTensors,
    labels: usize,
    device: &Device,
    dir: &Path,
) -> Result<Pretrained<ScalarModel>> {
    let (d, std) = (config.hidden_size(), config.initializer_range());
    let model = ScalarModel::from_decoder(config.init_decoder(device)?, d, labels, std, device);
    let model = fill(model, &config, &mut tensors, device, dir)?;
    Ok(Pretrained { model, config, tokenizer })
}

/// Loads an encoder classifier (`BertForSequenceClassification`), or a bare encoder
/// (`BertModel`, e.g. all-MiniLM-L6-v2) with a fresh head of `num_labels` outputs
/// (N(0, initializer_range) weights, zero bias, as `transformers` initialises `classifier`).
pub fn load_encoder_classifier(
    dir: &Path,
    num_labels: Option<usize>,
    device: &Device,
) -> Result<Pretrained<EncoderClassifier>> {
    let (config, tokenizer, mut tensors) = open(dir)?;
    let Arch::Bert(bert) = &config.arch else {
        return Err(bad_input!(
            "{}: a {} model is not an encoder\nhint: pass a BERT-family directory (e.g. models/minilm)",
            dir.display(),
            config.model_type()
        ));
    };
    let labels = match (config.head_kind(), num_labels) {
        (HeadKind::Encoder, Some(n)) => n,
        (HeadKind::Encoder, None) => {
            return Err(bad_input!("{}: a bare encoder has no classifier head", dir.display()));
        }
        (_, wanted) => {
            let has = config.num_labels();
            if wanted.is_some_and(|n| n != has) {
                return Err(bad_input!(
                    "{}: the classifier has {has} labels, not {}",
                    dir.display(),
                    wanted.unwrap_or_default()
                ));
            }
            has
        }
    };
    let (d, std) = (config.hidden_size(), config.initializer_range());
    let model = EncoderClassifier {
        body: bert.init(device)?,
        classifier: normal_linear(d, labels, true, std, device),
    };
    let headless = config.head_kind() == HeadKind::Encoder;
    let model = fill_keeping(model, &config, &mut tensors, device, dir, &|key| {
        headless && key.starts_with("classifier.")
    })?;
    Ok(Pretrained { model, config, tokenizer })
}

/// Writes a classifier (an encoder's or a decoder's) into `dir` with its labels (`id2label`
/// order) and `problem_type` (`multi_label_classification`, or `None` for a scalar reward
/// model).
pub fn save_classifier<M: Module>(
    model: &M,
    config: &ModelConfig,
    labels: &[String],
    problem_type: Option<&str>,
    tokenizer_from: Option<&Path>,
    dir: &Path,
) -> Result<()> {
    let head = if labels.len() == 1 { HeadKind::Scalar } else { HeadKind::Classifier };
    let mut json = config.to_json(head);
    let id2label: Map<String, Value> =
        labels.iter().enumerate().map(|(i, l)| (i.to_string(), Value::from(l.as_str()))).collect();
    let label2id: Map<String, Value> =
        labels.iter().enumerate().map(|(i, l)| (l.clone(), Value::from(i))).collect();
    json.insert("num_labels".into(), labels.len().into());
    json.insert("id2label".into(), id2label.into());
    json.insert("label2id".into(), label2id.into());
    match problem_type {
        Some(kind) => json.insert("problem_type".into(), kind.into()),
        None => json.remove("problem_type"),
    };
    write_model(model, config, json, tokenizer_from, dir)
}

/// Writes a causal LM into `dir` (which must exist; see `checkpoint::save_atomically`).
/// Tokenizer files are copied from `tokenizer_from` when given.
pub fn save_causal_lm(
    model: &CausalLm,
    config: &ModelConfig,
    tokenizer_from: Option<&Path>,
    dir: &Path,
) -> Result<()> {
    write_model(model, config, config.to_json(HeadKind::CausalLm), tokenizer_from, dir)?;
    let mut generation = Map::new();
    for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(id) = config.json.get(key).filter(|v| !v.is_null()) {
            generation.insert(key.into(), id.clone());
        }
    }
    // A chat model ends its turn with `<|im_end|>`; `generate` in `transformers` should stop
    // there too, as `rlhf generate` and `chat` do.
    let im_end = match dir.join("tokenizer.json").is_file() {
        true => tokenizer::read(dir)?.token_to_id(tokenizer::IM_END),
        false => None,
    };
    if let Some(im_end) = im_end {
        let mut ids = token_ids(generation.get("eos_token_id"));
        if !ids.contains(&im_end) {
            ids.push(im_end);
            generation.insert("eos_token_id".into(), ids.into());
        }
    }
    json_file::write(&dir.join("generation_config.json"), &generation)
}

/// Writes a scalar model into `dir`.
pub fn save_scalar_model(
    model: &ScalarModel,
    config: &ModelConfig,
    tokenizer_from: Option<&Path>,
    dir: &Path,
) -> Result<()> {
    write_model(model, config, config.to_json(HeadKind::Scalar), tokenizer_from, dir)
}

/// `config.json` (`json`), the weights, and the tokenizer files of `tokenizer_from`.
fn write_model<M: Module>(
    model: &M,
    config: &ModelConfig,
    json: Map<String, Value>,
    tokenizer_from: Option<&Path>,
    dir: &Path,
) -> Result<()> {
    json_file::write(&dir.join("config.json"), &json)?;
    weights::write_file(&dir.join(weights::SINGLE_FILE), &named_tensors(model, config.layout()))?;
    if let Some(source) = tokenizer_from {
        tokenizer::copy_files(source, dir, config.context_window())?;
    }
    Ok(())
}

/// Config, tokenizer (checked against the embedding) and raw tensors of a directory.
fn open(dir: &Path) -> Result<(ModelConfig, Option<Tokenizer>, NamedTensors)> {
    let config = ModelConfig::read(dir)?;
    let tokenizer = if dir.join("tokenizer.json").is_file() {
        let tokenizer = tokenizer::read(dir)?;
        tokenizer::check_fits(&tokenizer, config.vocab_size(), dir)?;
        Some(tokenizer)
    } else {
        None
    };
    let mut tensors = weights::read_model_weights(dir)?;
    add_body_prefix(&mut tensors, &config);
    Ok((config, tokenizer, tensors))
}

/// `GPT2Model.save_pretrained` (as on the Hub's `gpt2`) writes body tensors without the
/// `transformer.` prefix that the head models use; `transformers` accepts both, and so do we.
fn add_body_prefix(tensors: &mut NamedTensors, config: &ModelConfig) {
    let prefix = format!("{}.", config.layout().body_prefix);
    let heads = ["lm_head.", "score.", "classifier."];
    if tensors.keys().any(|k| k.starts_with(&prefix)) {
        return;
    }
    let bare: Vec<String> =
        tensors.keys().filter(|k| !heads.iter().any(|h| k.starts_with(h))).cloned().collect();
    for key in bare {
        let data = tensors.remove(&key).expect("key listed above");
        tensors.insert(format!("{prefix}{key}"), data);
    }
}

/// Loads `tensors` into `model`; what is left over must be a buffer `transformers` ignores too.
fn fill<M: Module>(
    model: M,
    config: &ModelConfig,
    tensors: &mut NamedTensors,
    device: &Device,
    dir: &Path,
) -> Result<M> {
    fill_keeping(model, config, tensors, device, dir, &|_| false)
}

/// `fill`, where tensors named so that `keep` holds may be missing (a fresh head).
fn fill_keeping<M: Module>(
    model: M,
    config: &ModelConfig,
    tensors: &mut NamedTensors,
    device: &Device,
    dir: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<M> {
    let model = load_module_keeping(model, tensors, config.layout(), device, keep)
        .map_err(|e| bad_input!("{}: weights do not match config.json:\n{e:#}", dir.display()))?;
    let tied = config.tied_embeddings();
    let unexpected: Vec<&String> = tensors
        .keys()
        .filter(|k| !(config.is_ignorable_buffer(k) || tied && k.as_str() == "lm_head.weight"))
        .collect();
    if !unexpected.is_empty() {
        let listed: Vec<String> = unexpected.iter().take(8).map(|k| format!("`{k}`")).collect();
        return Err(bad_input!(
            "{}: {} tensor(s) the {} architecture has no place for: {}{}",
            dir.display(),
            unexpected.len(),
            config.model_type(),
            listed.join(", "),
            if unexpected.len() > 8 { ", …" } else { "" }
        ));
    }
    Ok(model)
}
