//! Reading and writing safetensors weight files — never pickle.
//!
//! A file's header (names, dtypes, shapes, offsets) is validated by the `safetensors` crate
//! over a memory map before any tensor is allocated. Sharded checkpoints
//! (`model.safetensors.index.json`) load shard by shard. Half-precision weights are widened to
//! f32, the precision every model here runs in.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::TensorData;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::bad_input;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Every tensor of a checkpoint by its Hugging Face name.
pub type NamedTensors = BTreeMap<String, TensorData>;

/// Loads `model.safetensors`, or every shard that `model.safetensors.index.json` lists.
pub fn read_model_weights(dir: &Path) -> Result<NamedTensors> {
    let single = dir.join(SINGLE_FILE);
    if single.is_file() {
        return read_file(&single);
    }
    let index = dir.join(INDEX_FILE);
    if !index.is_file() {
        return Err(bad_input!(
            "{}: no {SINGLE_FILE} or {INDEX_FILE}\nhint: rlhf reads safetensors weights only; convert a pytorch_model.bin with `transformers` (save_pretrained(..., safe_serialization=True))",
            dir.display()
        ));
    }
    let mut tensors = NamedTensors::new();
    for shard in shard_files(&index)? {
        let path = dir.join(&shard);
        for (name, data) in read_file(&path)? {
            if tensors.insert(name.clone(), data).is_some() {
                return Err(bad_input!(
                    "{}: tensor `{name}` appears in two shards",
                    path.display()
                ));
            }
        }
    }
    Ok(tensors)
}

/// The shard files an index names, each once, in order of first mention.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text =
        std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let parsed: Index =
        serde_json::from_str(&text).map_err(|e| bad_input!("{}: {e}", index.display()))?;
    let mut shards: Vec<PathBuf> = Vec::new();
    for file in parsed.weight_map.values() {
        let file = PathBuf::from(file);
        if file.components().count() != 1 {
            return Err(bad_input!(
                "{}: shard `{}` is not a file name",
                index.display(),
                file.display()
            ));
        }
        if !shards.contains(&file) {
            shards.push(file);
        }
    }
    Ok(shards)
}

/// Reads one safetensors file.
pub fn read_file(path: &Path) -> Result<NamedTensors> {
    let file = File::open(path).map_err(|e| bad_input!("cannot open {}: {e}", path.display()))?;
    // SAFETY: the map is read-only and dropped before this function returns; a file changed
    // underneath us mid-read gives wrong numbers, never unsoundness in safe code we hand out.
    let mmap = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let parsed = SafeTensors::deserialize(&mmap)
        .map_err(|e| bad_input!("{}: not a valid safetensors file: {e}", path.display()))?;
    let mut tensors = NamedTensors::new();
    for (name, view) in parsed.tensors() {
        let data = to_tensor_data(&view)
            .map_err(|e| bad_input!("{}: tensor `{name}`: {e}", path.display()))?;
        tensors.insert(name, data);
    }
    Ok(tensors)
}

fn to_tensor_data(view: &TensorView<'_>) -> Result<TensorData, String> {
    let shape = view.shape().to_vec();
    let bytes = view.data();
    let floats = |width: usize, read: fn(&[u8]) -> f32| -> Vec<f32> {
        bytes.chunks_exact(width).map(read).collect()
    };
    Ok(match view.dtype() {
        Dtype::F32 => {
            TensorData::new(floats(4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])), shape)
        }
        Dtype::BF16 => {
            TensorData::new(floats(2, |b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()), shape)
        }
        Dtype::F16 => {
            TensorData::new(floats(2, |b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()), shape)
        }
        Dtype::F64 => {
            let v: Vec<f32> = bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect();
            TensorData::new(v, shape)
        }
        Dtype::I64 => {
            let v: Vec<i64> = bytes
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            TensorData::new(v, shape)
        }
        other => {
            return Err(format!(
                "unsupported dtype {other:?} (expected F32, BF16, F16, F64 or I64)"
            ));
        }
    })
}

/// Writes f32 tensors as one safetensors file with `{"format": "pt"}` metadata, as
/// `save_pretrained` does. Callers write into a staging directory (see `checkpoint.rs`).
pub fn write_file(path: &Path, tensors: &NamedTensors) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, data) in tensors {
        let dtype = match data.dtype() {
            burn::tensor::DType::F32 => Dtype::F32,
            burn::tensor::DType::I64 => Dtype::I64,
            other => anyhow::bail!("cannot save tensor `{name}` of dtype {other:?}"),
        };
        let view = TensorView::new(dtype, data.shape().to_vec(), data.as_bytes())
            .with_context(|| format!("tensor `{name}`"))?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| match e {
            // The OS error alone, not wrapped in a message that repeats it.
            safetensors::SafeTensorError::IoError(io) => anyhow::Error::new(io),
            other => anyhow::Error::new(other),
        })
        .with_context(|| format!("writing {}", path.display()))
}
