//! `rlhf model export`: a Llama-family causal LM directory → one GGUF file that llama.cpp,
//! ollama and `transformers` (`gguf_file=…`) load: llama.cpp's metadata keys and tensor names,
//! q/k rows in llama.cpp's rotary order, the tokenizer and chat template in `tokenizer.*`.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value as Json;

use super::file::{self, TensorOut, Value};
use super::names;
use super::quant::GgmlType;
use super::tokenizer;
use crate::bad_input;
use crate::data::template::ChatTemplate;
use crate::data::tokenizer::configured_token;
use crate::json_file;
use crate::model::config::Arch;
use crate::model::config::token_ids;
use crate::model::llama::LlamaConfig;
use crate::model::naming::named_tensors;
use crate::model::rope::RopeScaling;
use crate::model::{CausalLm, ModelConfig, load_causal_lm};

/// How export stores the matrices (vectors — norms, biases — stay f32, as in llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl ExportType {
    /// `general.file_type` (llama.cpp's `LLAMA_FTYPE_ALL_F32`, `MOSTLY_F16`, `MOSTLY_Q8_0`).
    fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q8_0 => 7,
        }
    }

    /// The type of a tensor with ggml dims `dims`: matrices take the chosen type when their rows
    /// fill its blocks (else f16), vectors stay f32.
    fn tensor_type(self, dims: &[u64]) -> GgmlType {
        match self {
            _ if dims.len() < 2 => GgmlType::F32,
            ExportType::F32 => GgmlType::F32,
            ExportType::F16 => GgmlType::F16,
            ExportType::Q8_0 if dims[0] % 32 == 0 => GgmlType::Q8_0,
            ExportType::Q8_0 => GgmlType::F16,
        }
    }
}

/// Writes `model_dir` as `out` (atomically: a partial file is never left under that name).
/// Returns the file's size in bytes.
pub fn export(
    model_dir: &Path,
    out: &Path,
    kind: ExportType,
    device: &burn::prelude::Device,
) -> Result<u64> {
    let loaded = load_causal_lm(model_dir, device)?;
    let config = &loaded.config;
    let Arch::Llama(llama) = &config.arch else {
        return Err(bad_input!(
            "{}: a {} model cannot be exported to GGUF (supported: llama, mistral, qwen2)",
            model_dir.display(),
            config.model_type()
        ));
    };
    let arch = if config.model_type() == "qwen2" { "qwen2" } else { "llama" };
    let mut metadata = model_metadata(model_dir, config, llama, arch, kind)?;
    metadata.extend(tokenizer_metadata(model_dir, config)?);
    let tensors = encode_tensors(&loaded.model, config, arch, kind)?;
    write_atomically(out, &metadata, &tensors)
}

/// `general.*` and `{arch}.*`: what llama.cpp needs to rebuild the model.
fn model_metadata(
    model_dir: &Path,
    config: &ModelConfig,
    llama: &LlamaConfig,
    arch: &str,
    kind: ExportType,
) -> Result<Vec<(String, Value)>> {
    let rope = llama.rope()?;
    let (layers, heads, kv_heads) = config.depth_and_heads();
    let head_dim = llama.head_dim.unwrap_or(config.hidden_size() / heads);
    let key = |name: &str| format!("{arch}.{name}");
    let name = model_dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(name)),
        ("general.file_type".into(), Value::U32(kind.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
        (key("context_length"), Value::U32(config.context_window() as u32)),
        (key("embedding_length"), Value::U32(config.hidden_size() as u32)),
        (key("block_count"), Value::U32(layers as u32)),
        (key("feed_forward_length"), Value::U32(llama.intermediate_size as u32)),
        (key("attention.head_count"), Value::U32(heads as u32)),
        (key("attention.head_count_kv"), Value::U32(kv_heads as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(llama.rms_norm_eps as f32)),
        (key("rope.freq_base"), Value::F32(rope.theta as f32)),
        (key("rope.dimension_count"), Value::U32(head_dim as u32)),
        (key("vocab_size"), Value::U32(config.vocab_size() as u32)),
    ];
    match rope.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            metadata.push((key("rope.scaling.type"), Value::String("linear".into())));
            metadata.push((key("rope.scaling.factor"), Value::F32(factor as f32)));
        }
        RopeScaling::Llama3 { .. } => {
            return Err(bad_input!(
                "{}: llama3 rope scaling cannot be exported yet (llama.cpp stores it as a rope_freqs tensor)",
                model_dir.display()
            ));
        }
    }
    Ok(metadata)
}

/// `tokenizer.*`: the vocabulary, the special token ids and the chat template.
fn tokenizer_metadata(model_dir: &Path, config: &ModelConfig) -> Result<Vec<(String, Value)>> {
    let path = model_dir.join("tokenizer.json");
    let json: Json = json_file::read(&path).map_err(|e| bad_input!("{}: {e:#}", path.display()))?;
    let tokenizer_config = json_file::read_optional(&model_dir.join("tokenizer_config.json"));
    let imported_pre = tokenizer_config.get(tokenizer::PRE_NAME_KEY).and_then(Json::as_str);
    let source = path.display().to_string();
    let mut metadata = tokenizer::export(&json, config.vocab_size(), imported_pre, &source)?;
    let tokenizer = crate::data::tokenizer::read(model_dir)?;
    // An id from config.json, else the token tokenizer_config.json names.
    let token_id = |config_key: &str, token_key: &str| {
        token_ids(config.json.get(config_key))
            .first()
            .copied()
            .or_else(|| tokenizer.token_to_id(configured_token(&tokenizer_config, token_key)?))
    };
    for (meta, config_key, token_key) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id", "pad_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token_id", "unk_token"),
    ] {
        if let Some(id) = token_id(config_key, token_key) {
            metadata.push((meta.into(), Value::U32(id)));
        }
    }
    let add_bos = tokenizer_config.get("add_bos_token").and_then(Json::as_bool).unwrap_or(false);
    metadata.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)));
    if let Ok(ChatTemplate::Model { source, .. }) = ChatTemplate::resolve(Some("model"), model_dir)
    {
        metadata.push(("tokenizer.chat_template".into(), Value::String(source)));
    }
    Ok(metadata)
}

/// Every weight under llama.cpp's name, q/k rows in its rotary order, encoded as `kind`.
fn encode_tensors(
    model: &CausalLm,
    config: &ModelConfig,
    arch: &str,
    kind: ExportType,
) -> Result<Vec<TensorOut>> {
    let (_, heads, kv_heads) = config.depth_and_heads();
    let mut tensors = Vec::new();
    for (hf, data) in named_tensors(model, config.layout()) {
        let name =
            names::to_gguf(&hf).with_context(|| format!("no GGUF name for tensor `{hf}`"))?;
        let shape = data.shape().to_vec();
        let mut values: Vec<f32> =
            data.convert::<f32>().try_into_vec::<f32>().expect("f32 weights");
        if arch == "llama"
            && let Some(n) = names::rotary_heads(&hf, heads, kv_heads)
        {
            values = names::to_pairs(&values, n, shape.get(1).copied().unwrap_or(1));
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let ggml_type = kind.tensor_type(&dims);
        tensors.push(TensorOut { name, bytes: ggml_type.quantize(&values), dims, ggml_type });
    }
    Ok(tensors)
}

/// Writes the file beside `out`, syncs it and renames it into place; returns its size.
fn write_atomically(
    out: &Path,
    metadata: &[(String, Value)],
    tensors: &[TensorOut],
) -> Result<u64> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name =
        out.file_name().with_context(|| format!("{} is not a file name", out.display()))?;
    let partial =
        parent.join(format!(".{}.partial-{}", file_name.to_string_lossy(), std::process::id()));
    let write = || -> Result<u64> {
        let handle = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut writer = BufWriter::new(handle);
        file::write(&mut writer, metadata, tensors)?;
        writer.flush()?;
        let handle = writer.into_inner().map_err(|e| e.into_error())?;
        handle.sync_all()?;
        Ok(handle.metadata()?.len())
    };
    let size = write().inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    std::fs::rename(&partial, out).with_context(|| format!("renaming into {}", out.display()))?;
    Ok(size)
}
