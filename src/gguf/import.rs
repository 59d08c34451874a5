//! `rlhf model import`: a GGUF file → a Hugging Face model directory every stage reads.
//!
//! `config.json` comes from the `{arch}.*` metadata, the weights are dequantized to f32 and
//! renamed to `transformers`' names (q and k rows put back in `transformers`' rotary order for
//! `llama`, GPT-2's Conv1D weights transposed back), and the tokenizer and chat template come
//! from `tokenizer.*`. The result is loaded
//! into the model as any directory would be before it is written, so a file that does not fit its
//! own config fails here, not in a later stage.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use serde_json::{Map, Value as Json, json};

use super::file::{GgufFile, Value};
use super::{names, tokenizer};
use crate::bad_input;
use crate::checkpoint::{Lineage, Source, save_atomically};
use crate::model::pretrained::causal_lm_from_tensors;
use crate::model::weights::NamedTensors;
use crate::model::{ModelConfig, save_causal_lm};

/// The architectures import maps, by `general.architecture`.
const ARCHITECTURES: &str = "gpt2, llama, qwen2";

/// What an import produced, for the one-line report.
pub struct Imported {
    pub architecture: String,
    pub parameters: usize,
    pub vocab_size: usize,
    /// Tensor count per ggml type name, as stored in the file.
    pub types: BTreeMap<&'static str, usize>,
}

pub fn import(gguf: &Path, out: &Path, device: &Device) -> Result<Imported> {
    let source = gguf.display().to_string();
    let handle = std::fs::File::open(gguf).map_err(|e| bad_input!("cannot open {source}: {e}"))?;
    if handle.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(bad_input!("{source} is a directory, not a GGUF file"));
    }
    // SAFETY: read-only map, dropped before returning; the tensors are copied out of it.
    let bytes =
        unsafe { memmap2::Mmap::map(&handle) }.with_context(|| format!("mapping {source}"))?;
    let file = GgufFile::parse(&bytes, gguf)?;

    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_input!("{source}: metadata `general.architecture` is missing"))?
        .to_string();
    let Some(table) = names::for_arch(&arch) else {
        return Err(bad_input!(
            "{source}: architecture `{arch}` is not supported (supported: {ARCHITECTURES})"
        ));
    };
    if let Some(t) = file.tensors.iter().find(|t| table.to_hf(&t.name).is_none()) {
        return Err(bad_input!(
            "{source}: tensor `{}` has no place in a {arch} model{}",
            t.name,
            if t.name == "rope_freqs.weight" {
                " (Llama 3.1-style rope frequency factors are not supported)"
            } else {
                ""
            }
        ));
    }
    let embedding = file
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .ok_or_else(|| bad_input!("{source}: tensor `token_embd.weight` is missing"))?;
    let vocab_size = embedding.torch_shape()[0];
    let tied = !file.tensors.iter().any(|t| t.name == "output.weight");

    let tok = tokenizer::import(&file, &source)?;
    if tok.vocab_size > vocab_size {
        return Err(bad_input!(
            "{source}: metadata `tokenizer.ggml.tokens` has {} tokens but tensor `token_embd.weight` only {vocab_size} rows",
            tok.vocab_size
        ));
    }
    let config_json = if arch == "gpt2" {
        gpt2_config_json(&file, vocab_size, tied, &source)?
    } else {
        config_json(&file, &arch, vocab_size, tied, &source)?
    };
    let config = ModelConfig::from_json(config_json)
        .map_err(|e| bad_input!("{source}: the model its metadata describes: {e:#}"))?;
    let (_, heads, kv_heads) = config.depth_and_heads();

    let (tensors, types) = read_tensors(&file, &arch, table, heads, kv_heads, &source)?;
    let model = causal_lm_from_tensors(&config, tensors, device, gguf)?;
    let parameters = burn::module::Module::num_params(&model);
    let lineage = Lineage {
        parent: Some(Source::file(gguf)?),
        ..Lineage::new(
            "import",
            json!({ "gguf": source, "architecture": arch, "gguf_version": file.version,
                    "tensor_types": types }),
        )
    };
    let context = config.context_window();
    save_atomically(out, |dir| {
        tok.write(dir, context)?;
        save_causal_lm(&model, &config, None, dir)?;
        lineage.write(dir)
    })?;
    Ok(Imported { architecture: arch, parameters, vocab_size, types })
}

/// Every tensor dequantized, under its `transformers` name and in its layout, with the count of
/// tensors per stored type.
fn read_tensors(
    file: &GgufFile,
    arch: &str,
    table: &names::Names,
    heads: usize,
    kv_heads: usize,
    source: &str,
) -> Result<(NamedTensors, BTreeMap<&'static str, usize>)> {
    let mut tensors = NamedTensors::new();
    let mut types = BTreeMap::new();
    for info in &file.tensors {
        let hf = table.to_hf(&info.name).expect("checked by the caller");
        let mut shape = info.torch_shape();
        let mut values = file.tensor_f32(info);
        // llama.cpp reorders q/k rows only for `llama` (its rope pairs adjacent dimensions);
        // `qwen2` files keep `transformers`' order.
        if arch == "llama"
            && let Some(n) = names::rotary_heads(&hf, heads, kv_heads)
        {
            let cols = shape.get(1).copied().unwrap_or(1);
            if shape[0] % (2 * n) != 0 {
                return Err(bad_input!(
                    "{source}: tensor `{}` has {} rows, not a whole number of {n} rotary heads",
                    info.name,
                    shape[0]
                ));
            }
            values = names::to_halves(&values, n, cols);
        }
        if names::is_conv1d_weight(&hf) && shape.len() == 2 {
            values = names::transpose(&values, shape[0], shape[1]);
            shape.swap(0, 1);
        }
        tensors.insert(hf, TensorData::new(values, shape));
        *types.entry(info.ggml_type.name()).or_insert(0) += 1;
    }
    Ok((tensors, types))
}

/// A metadata key that must be a non-negative integer if present.
fn count(file: &GgufFile, key: &str, source: &str) -> Result<Option<u64>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            bad_input!("{source}: metadata `{key}` = {v:?} is not a non-negative integer")
        }),
    }
}

/// GPT-2's `config.json` from the `gpt2.*` keys llama.cpp's converter writes.
fn gpt2_config_json(
    file: &GgufFile,
    vocab_size: usize,
    tied: bool,
    source: &str,
) -> Result<Map<String, Json>> {
    let required = |name: &str| -> Result<u64> {
        let key = format!("gpt2.{name}");
        count(file, &key, source)?
            .ok_or_else(|| bad_input!("{source}: metadata `{key}` is missing"))
    };
    let epsilon = file.get("gpt2.attention.layer_norm_epsilon").and_then(Value::as_f64);
    let mut json = Map::new();
    json.insert("architectures".into(), json!(["GPT2LMHeadModel"]));
    json.insert("model_type".into(), "gpt2".into());
    json.insert("vocab_size".into(), vocab_size.into());
    json.insert("n_positions".into(), required("context_length")?.into());
    json.insert("n_embd".into(), required("embedding_length")?.into());
    json.insert("n_layer".into(), required("block_count")?.into());
    json.insert("n_head".into(), required("attention.head_count")?.into());
    json.insert("n_inner".into(), required("feed_forward_length")?.into());
    json.insert("layer_norm_epsilon".into(), epsilon.unwrap_or(1e-5).into());
    // What llama.cpp's GPT-2 computes.
    json.insert("activation_function".into(), "gelu_new".into());
    json.insert("tie_word_embeddings".into(), tied.into());
    insert_special_ids(file, &mut json);
    Ok(json)
}

/// `bos_token_id`, `eos_token_id` and `pad_token_id` from `tokenizer.ggml.*`.
fn insert_special_ids(file: &GgufFile, json: &mut Map<String, Json>) {
    for (name, meta) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = file.get(meta).and_then(Value::as_u64) {
            json.insert(name.into(), id.into());
        }
    }
}

/// `config.json` from the `{arch}.*` keys, as `transformers`' GGUF loader maps them.
fn config_json(
    file: &GgufFile,
    arch: &str,
    vocab_size: usize,
    tied: bool,
    source: &str,
) -> Result<Map<String, Json>> {
    let key = |name: &str| format!("{arch}.{name}");
    let count = |name: &str| count(file, &key(name), source);
    let required = |name: &str| -> Result<u64> {
        count(name)?.ok_or_else(|| bad_input!("{source}: metadata `{}` is missing", key(name)))
    };
    let number = |name: &str| file.get(&key(name)).and_then(Value::as_f64);
    let heads = required("attention.head_count")?;
    let mut json = Map::new();
    let class = if arch == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" };
    json.insert("architectures".into(), json!([class]));
    json.insert("model_type".into(), arch.into());
    json.insert("vocab_size".into(), vocab_size.into());
    json.insert("hidden_size".into(), required("embedding_length")?.into());
    json.insert("intermediate_size".into(), required("feed_forward_length")?.into());
    json.insert("num_hidden_layers".into(), required("block_count")?.into());
    json.insert("num_attention_heads".into(), heads.into());
    json.insert(
        "num_key_value_heads".into(),
        count("attention.head_count_kv")?.unwrap_or(heads).into(),
    );
    if arch == "llama"
        && let Some(head_dim) = count("rope.dimension_count")?.or(count("attention.key_length")?)
    {
        json.insert("head_dim".into(), head_dim.into());
    }
    json.insert("max_position_embeddings".into(), count("context_length")?.unwrap_or(2048).into());
    json.insert(
        "rms_norm_eps".into(),
        number("attention.layer_norm_rms_epsilon").unwrap_or(1e-6).into(),
    );
    json.insert("rope_theta".into(), number("rope.freq_base").unwrap_or(10_000.0).into());
    match file.get(&key("rope.scaling.type")).and_then(Value::as_str) {
        None | Some("none") => {}
        Some("linear") => {
            let factor = number("rope.scaling.factor").ok_or_else(|| {
                bad_input!("{source}: metadata `{}` is missing", key("rope.scaling.factor"))
            })?;
            json.insert("rope_scaling".into(), json!({"rope_type": "linear", "factor": factor}));
        }
        Some(other) => {
            return Err(bad_input!(
                "{source}: metadata `{}` = \"{other}\" is not supported (none or linear)",
                key("rope.scaling.type")
            ));
        }
    }
    json.insert("hidden_act".into(), "silu".into());
    json.insert("tie_word_embeddings".into(), tied.into());
    insert_special_ids(file, &mut json);
    Ok(json)
}
