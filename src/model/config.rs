//! A model directory's `config.json`: which family, its resolved hyper-parameters, and the
//! original JSON (kept so a save writes back every key `transformers` put there).

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value, json};

use super::bert::{BertConfig, Pooling};
use super::decoder::Decoder;
use super::gpt2::Gpt2Config;
use super::llama::{Flavor, LlamaConfig};
use super::naming::HfLayout;
use tokenizers::Tokenizer;

use crate::bad_input;
use crate::data::tokenizer::END_OF_TEXT;

/// The `model_type`s `rlhf` loads.
pub const SUPPORTED: &str = "gpt2, llama, mistral, qwen2, bert";

/// The architectures `rlhf` can load, by `model_type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Arch {
    Gpt2(Gpt2Config),
    /// `llama`, `mistral` and `qwen2` (the flavour is inside).
    Llama(LlamaConfig),
    /// An encoder: classifiers and cross-encoder reward models only.
    Bert(BertConfig),
}

/// Which head a checkpoint carries, from `config.json`'s `architectures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `*LMHeadModel` / `*ForCausalLM` (or a bare body, which gets an LM head).
    CausalLm,
    /// `*ForSequenceClassification` with `num_labels = 1`: a reward or value model.
    Scalar,
    /// `*ForSequenceClassification` with several labels (the moderation classifier).
    Classifier,
    /// A bare encoder (`BertModel`), to put a classifier head on.
    Encoder,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Arch,
    /// `config.json` as read (or as a preset produced it).
    pub json: Map<String, Value>,
}

impl ModelConfig {
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(bad_input!("{}: {}", dir.display(), missing_model(dir)));
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            bad_input!(
                "{}: cannot read config.json: {e}\nhint: --model expects a Hugging Face model directory (config.json, model.safetensors, tokenizer.json)",
                dir.display()
            )
        })?;
        let json: Map<String, Value> =
            serde_json::from_str(&text).map_err(|e| bad_input!("{}: {e}", path.display()))?;
        Self::from_json(json).map_err(|e| bad_input!("{}: {e:#}", path.display()))
    }

    pub fn from_json(json: Map<String, Value>) -> Result<Self> {
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        let parse_error = |e: serde_json::Error| bad_input!("{model_type} config: {e}");
        let arch = if model_type == "gpt2" {
            let config: Gpt2Config =
                serde_json::from_value(Value::Object(json.clone())).map_err(parse_error)?;
            config.validate()?;
            Arch::Gpt2(config)
        } else if let Some(flavor) = Flavor::from_model_type(model_type) {
            let mut config: LlamaConfig =
                serde_json::from_value(Value::Object(json.clone())).map_err(parse_error)?;
            config.flavor = flavor;
            config.validate()?;
            Arch::Llama(config)
        } else if model_type == "bert" {
            let config: BertConfig =
                serde_json::from_value(Value::Object(json.clone())).map_err(parse_error)?;
            config.validate()?;
            Arch::Bert(config)
        } else if model_type.is_empty() {
            return Err(bad_input!("no `model_type` (supported: {SUPPORTED})"));
        } else {
            return Err(bad_input!(
                "unsupported model_type `{model_type}` (supported: {SUPPORTED})"
            ));
        };
        Ok(Self { arch, json })
    }

    /// The same encoder with its classifier reading `pooling`, saved as `classifier_pooling`.
    pub fn with_pooling(mut self, pooling: Pooling) -> Result<Self> {
        let Arch::Bert(bert) = &mut self.arch else {
            return Err(bad_input!(
                "key `model.pooling` applies to BERT-family encoders; a {} decoder reads its last token\nhint: remove it",
                self.model_type()
            ));
        };
        bert.classifier_pooling = pooling;
        self.json.insert("classifier_pooling".into(), json!(pooling));
        Ok(self)
    }

    pub fn model_type(&self) -> &'static str {
        match &self.arch {
            Arch::Gpt2(_) => "gpt2",
            Arch::Llama(c) => c.flavor.model_type(),
            Arch::Bert(_) => "bert",
        }
    }

    pub fn vocab_size(&self) -> usize {
        match &self.arch {
            Arch::Gpt2(c) => c.vocab_size,
            Arch::Llama(c) => c.vocab_size,
            Arch::Bert(c) => c.vocab_size,
        }
    }

    pub fn hidden_size(&self) -> usize {
        match &self.arch {
            Arch::Gpt2(c) => c.n_embd,
            Arch::Llama(c) => c.hidden_size,
            Arch::Bert(c) => c.hidden_size,
        }
    }

    /// (layers, attention heads, key/value heads)
    pub fn depth_and_heads(&self) -> (usize, usize, usize) {
        match &self.arch {
            Arch::Gpt2(c) => (c.n_layer, c.n_head, c.n_head),
            Arch::Llama(c) => (c.num_hidden_layers, c.num_attention_heads, c.kv_heads()),
            Arch::Bert(c) => (c.num_hidden_layers, c.num_attention_heads, c.num_attention_heads),
        }
    }

    pub fn context_window(&self) -> usize {
        match &self.arch {
            Arch::Gpt2(c) => c.n_positions,
            Arch::Llama(c) => c.max_position_embeddings,
            Arch::Bert(c) => c.max_position_embeddings,
        }
    }

    pub fn initializer_range(&self) -> f64 {
        match &self.arch {
            Arch::Gpt2(c) => c.initializer_range,
            Arch::Llama(c) => c.initializer_range,
            Arch::Bert(c) => c.initializer_range,
        }
    }

    /// The token that ends a text: `eos_token_id`, else the tokenizer's `<|endoftext|>`.
    pub fn eos_id(&self, tokenizer: &Tokenizer) -> Option<u32> {
        token_ids(self.json.get("eos_token_id"))
            .first()
            .copied()
            .or_else(|| tokenizer.token_to_id(END_OF_TEXT))
    }

    /// Padding: `pad_token_id`, else end-of-text, else 0 (padding is masked out anyway).
    pub fn pad_id(&self, tokenizer: &Tokenizer) -> u32 {
        token_ids(self.json.get("pad_token_id"))
            .first()
            .copied()
            .or_else(|| self.eos_id(tokenizer))
            .unwrap_or(0)
    }

    /// Whether the LM head reuses the token embedding. A missing key means true: `transformers`
    /// 4.x leaves out values equal to `PretrainedConfig`'s defaults, and this one is true there.
    pub fn tied_embeddings(&self) -> bool {
        self.json.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(true)
    }

    pub fn head_kind(&self) -> HeadKind {
        let architectures = self.json.get("architectures").and_then(Value::as_array);
        let is_classifier = architectures
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|a| a.ends_with("ForSequenceClassification"));
        match (is_classifier, &self.arch) {
            (true, _) if self.num_labels() == 1 => HeadKind::Scalar,
            (true, _) => HeadKind::Classifier,
            (false, Arch::Bert(_)) => HeadKind::Encoder,
            (false, _) => HeadKind::CausalLm,
        }
    }

    /// `num_labels` of a classifier: the size of `id2label` (or the key itself).
    pub fn num_labels(&self) -> usize {
        match self.json.get("id2label").and_then(Value::as_object) {
            Some(labels) => labels.len(),
            None => self.json.get("num_labels").and_then(Value::as_u64).unwrap_or(2) as usize,
        }
    }

    pub fn layout(&self) -> HfLayout {
        match self.arch {
            Arch::Gpt2(_) => {
                HfLayout { body_prefix: "transformer", body_is_conv1d: true, renames: &[] }
            }
            Arch::Llama(_) => {
                HfLayout { body_prefix: "model", body_is_conv1d: false, renames: &[] }
            }
            Arch::Bert(_) => HfLayout {
                body_prefix: "bert",
                body_is_conv1d: false,
                renames: &[("self_attention", "self"), ("layer_norm", "LayerNorm")],
            },
        }
    }

    /// Keys that older `transformers` saved as persistent buffers and that carry no weights.
    pub fn is_ignorable_buffer(&self, key: &str) -> bool {
        match self.arch {
            Arch::Gpt2(_) => key.ends_with(".attn.bias") || key.ends_with(".attn.masked_bias"),
            Arch::Llama(_) => key.ends_with(".rotary_emb.inv_freq"),
            Arch::Bert(_) => key.ends_with("embeddings.position_ids"),
        }
    }

    /// A decoder with lazily initialised random weights.
    pub fn init_decoder(&self, device: &burn::prelude::Device) -> Result<Decoder> {
        Ok(match &self.arch {
            Arch::Gpt2(c) => Decoder::Gpt2(c.init(device)?),
            Arch::Llama(c) => Decoder::Llama(c.init(device)?),
            Arch::Bert(_) => {
                return Err(bad_input!(
                    "bert is an encoder: it can be a classifier or a cross-encoder reward model, not a language model"
                ));
            }
        })
    }

    /// `config.json` for a checkpoint with the given head, as the pinned `transformers` (5.x)
    /// writes it: `dtype` rather than `torch_dtype`, `rope_parameters` rather than
    /// `rope_theta` + `rope_scaling`.
    pub fn to_json(&self, head: HeadKind) -> Map<String, Value> {
        let mut json = self.json.clone();
        let stem = match &self.arch {
            Arch::Gpt2(_) => "GPT2",
            Arch::Llama(c) => c.flavor.class_stem(),
            Arch::Bert(_) => "Bert",
        };
        let architecture = match (head, &self.arch) {
            (HeadKind::CausalLm, Arch::Gpt2(_)) => "GPT2LMHeadModel".to_string(),
            (HeadKind::CausalLm, _) => format!("{stem}ForCausalLM"),
            (HeadKind::Scalar | HeadKind::Classifier, _) => {
                format!("{stem}ForSequenceClassification")
            }
            (HeadKind::Encoder, _) => format!("{stem}Model"),
        };
        json.insert("architectures".into(), json!([architecture]));
        json.insert("model_type".into(), json!(self.model_type()));
        json.insert("dtype".into(), json!("float32"));
        json.remove("torch_dtype");
        if let Arch::Llama(c) = &self.arch {
            let rope = c.rope().expect("validated when read");
            json.remove("rope_theta");
            json.remove("rope_scaling");
            json.insert("rope_parameters".into(), rope.to_hf());
        }
        match head {
            HeadKind::Scalar => {
                json.insert("num_labels".into(), json!(1));
                json.insert("id2label".into(), json!({"0": "LABEL_0"}));
                json.insert("label2id".into(), json!({"LABEL_0": 0}));
            }
            HeadKind::Classifier => {} // labels and problem_type are set by the classifier's trainer
            HeadKind::CausalLm | HeadKind::Encoder => {
                for key in ["num_labels", "id2label", "label2id", "problem_type"] {
                    json.remove(key);
                }
            }
        }
        json
    }
}

/// `eos_token_id` is an id or a list of ids in `config.json` / `generation_config.json`.
/// Why `path` is not a model directory, and what to do: a GGUF file is imported first, a
/// Hugging Face hub id is downloaded first (rlhf reads local directories only).
pub fn missing_model(path: &Path) -> String {
    let text = path.to_string_lossy();
    let is_gguf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let looks_like_hub_id = path.is_relative()
        && text.split('/').count() == 2
        && !text.starts_with('.')
        && !path.exists()
        && path.parent().is_some_and(|p| !p.exists());
    match () {
        _ if is_gguf && path.is_file() => format!(
            "a GGUF file, not a model directory\nhint: import it first: rlhf model import --gguf {text} --out models/NAME, then pass models/NAME"
        ),
        _ if path.is_file() => {
            "a file, not a model directory (config.json, model.safetensors, tokenizer.json)".into()
        }
        _ if looks_like_hub_id => format!(
            "no such model directory\nhint: `{text}` looks like a Hugging Face hub id; rlhf reads local directories only: download it first (e.g. `huggingface-cli download {text} --local-dir models/{}`) and pass that directory",
            text.rsplit('/').next().unwrap_or_default()
        ),
        _ => "no such model directory".into(),
    }
}

pub fn token_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|id| vec![id as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(items)) => {
            items.iter().filter_map(|v| v.as_u64()).map(|id| id as u32).collect()
        }
        _ => Vec::new(),
    }
}
