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

use super::config::{HeadKind, ModelConfig};
use super::heads::{CausalLm, ScalarModel};
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

/// A built-in preset (`tiny`, `llama-tiny`, …) with a 300-token tokenizer, initialised from
/// `seed` on `device`: the small models unit tests compute on.
#[cfg(test)]
pub fn tiny_causal_lm(preset: &str, seed: u64, device: &Device) -> CausalLm {
    let tok = crate::data::tokenizer::train_bpe(["a b c d e f g"].into_iter(), 300).unwrap();
    let config = super::preset::resolve(preset, &[], &tok, Path::new(".")).unwrap();
    device.seed(seed);
    init_causal_lm(&config, device).unwrap()
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

/// `GPT2Model.save_pretrained` (as on the Hub's `gpt2`) writes body tensors without the
/// `transformer.` prefix that the head models use; `transformers` accepts both, and so do we.
pub(super) fn add_body_prefix(tensors: &mut NamedTensors, config: &ModelConfig) {
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
pub(super) fn fill<M: Module>(
    model: M,
    config: &ModelConfig,
    tensors: &mut NamedTensors,
    device: &Device,
    dir: &Path,
) -> Result<M> {
    fill_keeping(model, config, tensors, device, dir, &|_| false)
}

/// `fill`, where tensors named so that `keep` holds may be missing (a fresh head).
pub(super) fn fill_keeping<M: Module>(
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
