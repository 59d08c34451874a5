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
    read_bytes(&mmap).map_err(|e| bad_input!("{}: {e}", path.display()))
}

/// Reads the tensors of a safetensors file's bytes.
pub fn read_bytes(bytes: &[u8]) -> Result<NamedTensors, String> {
    let invalid = |e: String| format!("not a valid safetensors file: {e}");
    check_header(bytes).map_err(invalid)?;
    let parsed = SafeTensors::deserialize(bytes).map_err(|e| invalid(e.to_string()))?;
    let mut tensors = NamedTensors::new();
    for (name, view) in parsed.tensors() {
        let data = to_tensor_data(&view).map_err(|e| format!("tensor `{name}`: {e}"))?;
        tensors.insert(name, data);
    }
    Ok(tensors)
}

/// The largest header accepted (as the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Checks a file's header against its length before anything is read or allocated, naming the
/// tensor at fault: the header fits in the file, every shape's size (without overflow) matches
/// its byte span, and the spans tile the data exactly — no gaps, no overlaps, nothing beyond
/// the end. A file that claims a terabyte costs nothing to reject.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    let Some((length, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(format!("{} bytes, too short to hold a header", bytes.len()));
    };
    let length = u64::from_le_bytes(*length);
    if length > rest.len() as u64 || length > MAX_HEADER_BYTES {
        return Err(format!(
            "the header claims {length} bytes but the file has {} after its length",
            rest.len()
        ));
    }
    let (header, data) = rest.split_at(length as usize);
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("the header is not JSON: {e}"))?;
    #[derive(serde::Deserialize)]
    struct Info {
        dtype: Dtype,
        shape: Vec<u64>,
        data_offsets: (u64, u64),
    }
    let mut spans = Vec::with_capacity(header.len());
    for (name, info) in header.into_iter().filter(|(name, _)| name != "__metadata__") {
        let info: Info =
            serde_json::from_value(info).map_err(|e| format!("tensor `{name}`: {e}"))?;
        let (start, end) = info.data_offsets;
        let bytes = info
            .shape
            .iter()
            .try_fold(info.dtype.bitsize() as u64, |n, &d| n.checked_mul(d))
            .map(|bits| bits.div_ceil(8));
        if bytes != end.checked_sub(start) {
            return Err(format!(
                "tensor `{name}`: shape {:?} of {:?} does not fill its offsets [{start}, {end}]",
                info.shape, info.dtype
            ));
        }
        if end > data.len() as u64 {
            return Err(format!(
                "tensor `{name}`: its data ends at byte {end} but the file holds {} (truncated?)",
                data.len()
            ));
        }
        spans.push((start, end, name));
    }
    spans.sort();
    let mut covered = 0;
    for (i, (start, end, name)) in spans.iter().enumerate() {
        if *start < covered {
            return Err(format!("tensor `{name}` overlaps tensor `{}`", spans[i - 1].2));
        }
        if *start > covered {
            return Err(format!(
                "bytes {covered}..{start} before tensor `{name}` belong to no tensor"
            ));
        }
        covered = *end;
    }
    if covered != data.len() as u64 {
        return Err(format!(
            "{} bytes after the last tensor belong to no tensor",
            data.len() as u64 - covered
        ));
    }
    Ok(())
}

/// The tensor as f32 (or i64), refusing NaN and infinite weights: they would only surface later
/// as a diverged loss or garbage output, far from their cause.
fn to_tensor_data(view: &TensorView<'_>) -> Result<TensorData, String> {
    let shape = view.shape().to_vec();
    let bytes = view.data();
    let floats = |width: usize, read: fn(&[u8]) -> f32| -> Vec<f32> {
        bytes.chunks_exact(width).map(read).collect()
    };
    let data = match view.dtype() {
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
    };
    if let Ok(values) = data.as_slice::<f32>() {
        let bad = values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(format!("{bad} of {} values are NaN or infinite", values.len()));
        }
    }
    Ok(data)
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
