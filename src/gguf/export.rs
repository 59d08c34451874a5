//! `rlhf model export`: a causal LM directory (Llama, Mistral, Qwen2 or GPT-2 family) → one GGUF
//! file that llama.cpp, ollama and `transformers` (`gguf_file=…`) load: the metadata keys
//! llama.cpp's converter writes for the architecture, its tensor names and layouts (Llama's q/k
//! rows in its rotary order, GPT-2's Conv1D weights transposed), each tensor in the type mix.rs
//! picks, and the tokenizer and chat template in `tokenizer.*` under a pre-tokenizer name
//! llama.cpp knows.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value as Json;

use super::file::{self, TensorOut, Value};
use super::mix::{ExportType, Mix};
use super::names;
use super::tokenizer;
use crate::bad_input;
use crate::checkpoint::Lineage;
use crate::data::template::ChatTemplate;
use crate::data::tokenizer::configured_token;
use crate::json_file;
use crate::model::config::Arch;
use crate::model::config::token_ids;
use crate::model::gpt2::Gpt2Config;
use crate::model::llama::LlamaConfig;
use crate::model::naming::named_tensors;
use crate::model::rope::RopeScaling;
use crate::model::{CausalLm, ModelConfig, load_causal_lm};

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
    let (arch, model_keys) = match &config.arch {
        Arch::Llama(llama) => {
            let arch = if config.model_type() == "qwen2" { "qwen2" } else { "llama" };
            (arch, llama_metadata(model_dir, config, llama, arch)?)
        }
        Arch::Gpt2(gpt2) => ("gpt2", gpt2_metadata(model_dir, gpt2)?),
        Arch::Bert(_) => {
            return Err(bad_input!(
                "{}: a {} model cannot be exported to GGUF (supported: gpt2, llama, mistral, qwen2)",
                model_dir.display(),
                config.model_type()
            ));
        }
    };
    let name = lineage_name(model_dir);
    let mut metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(name)),
        ("general.file_type".into(), Value::U32(kind.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
    ];
    metadata.extend(model_keys);
    metadata.extend(tokenizer_metadata(model_dir, config)?);
    let (layers, _, _) = config.depth_and_heads();
    let mix = Mix { kind, layers, tied: config.tied_embeddings() };
    let tensors = encode_tensors(&loaded.model, config, arch, &mix)?;
    write_atomically(out, &metadata, &tensors)
}

/// `general.name`: the model a run started from and the stages since, from the lineage
/// (`smollm2-sft-ppo`), rather than the output folder's name (`ppo`).
fn lineage_name(model_dir: &Path) -> String {
    let folder = |dir: &Path| dir.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut stages = Vec::new();
    let mut dir = model_dir.to_path_buf();
    // A chain longer than this is a loop of copied lineages, not a history.
    for _ in 0..16 {
        let Ok(lineage) = Lineage::read(&dir) else { break };
        if matches!(lineage.stage.as_str(), "import" | "init") {
            break;
        }
        stages.push(lineage.stage);
        match lineage.parent {
            Some(parent) => dir = parent.path.into(),
            None => break,
        }
    }
    let root = folder(&dir).or_else(|| folder(model_dir)).unwrap_or_else(|| "model".into());
    stages.reverse();
    std::iter::once(root).chain(stages).collect::<Vec<_>>().join("-")
}

/// `{arch}.*` for Llama, Mistral (written as `llama`, as llama.cpp's converter does) and Qwen2.
fn llama_metadata(
    model_dir: &Path,
    config: &ModelConfig,
    llama: &LlamaConfig,
    arch: &str,
) -> Result<Vec<(String, Value)>> {
    if !matches!(llama.hidden_act.as_str(), "silu" | "swish") {
        return Err(bad_input!(
            "{}: hidden_act `{}` cannot be exported: llama.cpp's {arch} computes SiLU",
            model_dir.display(),
            llama.hidden_act
        ));
    }
    let rope = llama.rope()?;
    let (layers, heads, kv_heads) = config.depth_and_heads();
    let head_dim = llama.head_dim.unwrap_or(config.hidden_size() / heads);
    let key = |name: &str| format!("{arch}.{name}");
    let mut metadata: Vec<(String, Value)> = vec![
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
    // A head size other than hidden / heads: llama.cpp takes it from the key length (and refuses
    // a rope dimension that differs from it); the converter writes both for a `head_dim`.
    if llama.head_dim.is_some() {
        metadata.push((key("attention.key_length"), Value::U32(head_dim as u32)));
        metadata.push((key("attention.value_length"), Value::U32(head_dim as u32)));
    }
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

/// `gpt2.*`, the keys llama.cpp's converter writes. llama.cpp's GPT-2 computes GELU's tanh form
/// and scales attention by 1/√head_dim: a config that asks for anything else is refused.
fn gpt2_metadata(model_dir: &Path, gpt2: &Gpt2Config) -> Result<Vec<(String, Value)>> {
    let tanh_gelu = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"];
    let unsupported = if !tanh_gelu.contains(&gpt2.activation_function.as_str()) {
        Some(format!(
            "activation_function `{}` (llama.cpp computes GELU's tanh form: gelu_new)",
            gpt2.activation_function
        ))
    } else if !gpt2.scale_attn_weights || gpt2.scale_attn_by_inverse_layer_idx {
        Some("attention scaled other than by 1/sqrt(head_dim)".to_string())
    } else {
        None
    };
    if let Some(what) = unsupported {
        return Err(bad_input!(
            "{}: {what} cannot be exported: llama.cpp's gpt2 has no such option",
            model_dir.display()
        ));
    }
    let key = |name: &str| format!("gpt2.{name}");
    Ok(vec![
        (key("context_length"), Value::U32(gpt2.n_positions as u32)),
        (key("embedding_length"), Value::U32(gpt2.n_embd as u32)),
        (key("block_count"), Value::U32(gpt2.n_layer as u32)),
        (key("feed_forward_length"), Value::U32(gpt2.inner_dim() as u32)),
        (key("attention.head_count"), Value::U32(gpt2.n_head as u32)),
        (key("attention.layer_norm_epsilon"), Value::F32(gpt2.layer_norm_epsilon as f32)),
    ])
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
    let flag = |key: &str| tokenizer_config.get(key).and_then(Json::as_bool);
    metadata.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(flag("add_bos_token") == Some(true)),
    ));
    if let Some(add_eos) = flag("add_eos_token") {
        metadata.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(add_eos)));
    }
    if let Ok(ChatTemplate::Model { source, .. }) = ChatTemplate::resolve(Some("model"), model_dir)
    {
        metadata.push(("tokenizer.chat_template".into(), Value::String(source)));
    }
    Ok(metadata)
}

/// Every weight under llama.cpp's name and in its layout, encoded as `mix` says.
fn encode_tensors(
    model: &CausalLm,
    config: &ModelConfig,
    arch: &str,
    mix: &Mix,
) -> Result<Vec<TensorOut>> {
    let (_, heads, kv_heads) = config.depth_and_heads();
    let table = names::for_arch(arch).expect("an architecture that export writes");
    let mut tensors = Vec::new();
    for (hf, data) in named_tensors(model, config.layout()) {
        let name = table.to_gguf(&hf).with_context(|| format!("no GGUF name for tensor `{hf}`"))?;
        let mut shape = data.shape().to_vec();
        let mut values: Vec<f32> =
            data.convert::<f32>().try_into_vec::<f32>().expect("f32 weights");
        if arch == "llama"
            && let Some(n) = names::rotary_heads(&hf, heads, kv_heads)
        {
            values = names::to_pairs(&values, n, shape.get(1).copied().unwrap_or(1));
        }
        if names::is_conv1d_weight(&hf) {
            values = names::transpose(&values, shape[0], shape[1]);
            shape.swap(0, 1);
        }
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let ggml_type = mix.tensor_type(&name, &dims);
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
