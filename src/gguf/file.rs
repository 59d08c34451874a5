//! The GGUF container (llama.cpp's `docs/gguf.md`): a header, typed key–value metadata, tensor
//! descriptions, then the tensor data at `general.alignment`-aligned offsets. Versions 2 and 3
//! (version 1 used 32-bit counts and is long gone). Little-endian only, as every file in use.
//!
//! Reading never trusts a count or an offset: every length is checked against the bytes that are
//! left before anything is allocated, and every tensor's extent against the file's length.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::quant::GgmlType;
use crate::bad_input;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value, one variant per GGUF value type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value type id the file format gives it.
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// Any integer type, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// One tensor's description. `dims` are ggml's `ne`: the fastest-varying dimension first, so a
/// `[out, in]` matrix of PyTorch is `[in, out]` here.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// The shape as PyTorch and safetensors write it (slowest dimension first).
    pub fn torch_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file: metadata, tensor descriptions, and the bytes of the data section.
pub struct GgufFile<'a> {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data: &'a [u8],
}

impl<'a> GgufFile<'a> {
    /// Parses `bytes` (the whole file); `path` only names it in errors.
    pub fn parse(bytes: &'a [u8], path: &Path) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0, path };
        if bytes.len() < 4 || &bytes[..4] != MAGIC {
            return Err(bad_input!(
                "{}: not a GGUF file (it does not start with the bytes `GGUF`)",
                path.display()
            ));
        }
        r.pos = 4;
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(bad_input!(
                "{}: GGUF version {version} is not supported (2 and 3 are)",
                path.display()
            ));
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = r.string("metadata key")?;
            let type_id = r.u32(&key)?;
            let value = r.value(type_id, &key, 0)?;
            metadata.insert(key, value);
        }
        // Each description takes at least 24 bytes: refuse absurd counts before reserving.
        r.check_count(tensor_count, 24, "tensor count")?;
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if !(1..=4).contains(&n_dims) {
                return Err(bad_input!(
                    "{}: tensor `{name}` has {n_dims} dimensions (1 to 4 expected)",
                    path.display()
                ));
            }
            let dims = (0..n_dims).map(|_| r.u64(&name)).collect::<Result<Vec<_>>>()?;
            let type_id = r.u32(&name)?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                bad_input!(
                    "{}: tensor `{name}` has ggml type {} which rlhf cannot read (supported: {})",
                    path.display(),
                    GgmlType::describe_id(type_id),
                    GgmlType::SUPPORTED
                )
            })?;
            let offset = r.u64(&name)?;
            tensors.push(TensorInfo { name, dims, ggml_type, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(bad_input!(
                        "{}: metadata `general.alignment` = {v:?} is not a power of two",
                        path.display()
                    ));
                }
            },
        };
        let data_start = r.pos.div_ceil(alignment as usize) * alignment as usize;
        let data = bytes.get(data_start..).unwrap_or_default();
        let file = Self { version, metadata, tensors, data };
        file.check_extents(path, alignment)?;
        Ok(file)
    }

    /// Every tensor lies inside the file, aligned, with a whole number of blocks.
    fn check_extents(&self, path: &Path, alignment: u64) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for t in &self.tensors {
            if !seen.insert(t.name.as_str()) {
                return Err(bad_input!("{}: tensor `{}` appears twice", path.display(), t.name));
            }
            let size = t.ggml_type.byte_size(&t.dims).map_err(|e| {
                bad_input!("{}: tensor `{}` ({:?}): {e}", path.display(), t.name, t.dims)
            })?;
            if t.offset % alignment != 0 {
                return Err(bad_input!(
                    "{}: tensor `{}` starts at offset {} which is not a multiple of the alignment {alignment}",
                    path.display(),
                    t.name,
                    t.offset
                ));
            }
            let end = t.offset.checked_add(size);
            if end.is_none_or(|end| end > self.data.len() as u64) {
                return Err(bad_input!(
                    "{}: tensor `{}` ({} bytes at offset {}) runs past the end of the file ({} bytes of tensor data): the file is truncated or corrupt",
                    path.display(),
                    t.name,
                    size,
                    t.offset,
                    self.data.len()
                ));
            }
        }
        Ok(())
    }

    /// The raw (possibly quantized) bytes of a tensor; extents were checked by `parse`.
    pub fn tensor_bytes(&self, tensor: &TensorInfo) -> &'a [u8] {
        let size = tensor.ggml_type.byte_size(&tensor.dims).expect("checked by parse") as usize;
        let start = tensor.offset as usize;
        &self.data[start..start + size]
    }

    /// A tensor dequantized to f32, in ggml's element order (= PyTorch's row-major order).
    pub fn tensor_f32(&self, tensor: &TensorInfo) -> Vec<f32> {
        tensor.ggml_type.dequantize(self.tensor_bytes(tensor))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}

/// A cursor over the file's bytes that turns every short read into an error naming the field.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        match self.pos.checked_add(n).filter(|&end| end <= self.bytes.len()) {
            Some(end) => {
                let slice = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(slice)
            }
            None => Err(bad_input!(
                "{}: truncated GGUF file: `{what}` needs {n} bytes at offset {} but the file has {}",
                self.path.display(),
                self.pos,
                self.bytes.len()
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// `count` items of at least `min_size` bytes each must fit in what is left.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<()> {
        let left = (self.bytes.len() - self.pos) as u64;
        if count.saturating_mul(min_size) > left {
            return Err(bad_input!(
                "{}: `{what}` claims {count} items but only {left} bytes are left: the file is truncated or corrupt",
                self.path.display()
            ));
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        self.check_count(len, 1, what)?;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            bad_input!("{}: `{what}`: a string that is not UTF-8", self.path.display())
        })
    }

    fn value(&mut self, type_id: u32, key: &str, depth: usize) -> Result<Value> {
        Ok(match type_id {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => {
                    return Err(bad_input!(
                        "{}: metadata `{key}`: bool byte {other} is neither 0 nor 1",
                        self.path.display()
                    ));
                }
            },
            8 => Value::String(self.string(key)?),
            9 if depth == 0 => {
                let item_type = self.u32(key)?;
                let count = self.u64(key)?;
                self.check_count(count, 1, key)?;
                let items = (0..count)
                    .map(|_| self.value(item_type, key, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                Value::Array(items)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            _ => {
                return Err(bad_input!(
                    "{}: metadata `{key}` has unknown value type {type_id}",
                    self.path.display()
                ));
            }
        })
    }
}

/// A tensor to write: its ggml description (offset assigned on write) and encoded bytes.
pub struct TensorOut {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub bytes: Vec<u8>,
}

/// Writes a GGUF v3 file: metadata in the given order, tensors in the given order, each
/// starting at a multiple of the default alignment (32 bytes).
pub fn write(
    out: &mut impl Write,
    metadata: &[(String, Value)],
    tensors: &[TensorOut],
) -> Result<()> {
    let mut head = Vec::new();
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut head, key);
        head.extend_from_slice(&value.type_id().to_le_bytes());
        put_value(&mut head, value);
    }
    let align = |n: u64| n.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    let mut offset = 0u64;
    for t in tensors {
        put_string(&mut head, &t.name);
        head.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&t.ggml_type.id().to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        offset = align(offset + t.bytes.len() as u64);
    }
    head.resize(align(head.len() as u64) as usize, 0);
    out.write_all(&head).context("writing the GGUF header")?;
    for t in tensors {
        out.write_all(&t.bytes).with_context(|| format!("writing tensor {}", t.name))?;
        let padding = align(t.bytes.len() as u64) as usize - t.bytes.len();
        out.write_all(&vec![0u8; padding])?;
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.push(*v as u8),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array still needs an item type; strings are as good as any.
            let item_type = items.first().map_or(8, Value::type_id);
            out.extend_from_slice(&item_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let metadata = vec![
            ("general.architecture".to_string(), Value::String("llama".into())),
            ("a.u8".into(), Value::U8(7)),
            ("a.i8".into(), Value::I8(-7)),
            ("a.u16".into(), Value::U16(700)),
            ("a.i16".into(), Value::I16(-700)),
            ("a.i32".into(), Value::I32(-70000)),
            ("a.f32".into(), Value::F32(1.5)),
            ("a.bool".into(), Value::Bool(true)),
            ("a.u64".into(), Value::U64(1 << 40)),
            ("a.i64".into(), Value::I64(-(1 << 40))),
            ("a.f64".into(), Value::F64(0.25)),
            (
                "a.list".into(),
                Value::Array(vec![Value::String("x".into()), Value::String("y".into())]),
            ),
        ];
        let tensors = vec![
            TensorOut {
                name: "t".into(),
                dims: vec![3, 2],
                ggml_type: GgmlType::F32,
                bytes: [1f32, 2., 3., 4., 5., 6.].iter().flat_map(|v| v.to_le_bytes()).collect(),
            },
            TensorOut {
                name: "u".into(),
                dims: vec![1],
                ggml_type: GgmlType::F32,
                bytes: 9f32.to_le_bytes().to_vec(),
            },
        ];
        let mut bytes = Vec::new();
        write(&mut bytes, &metadata, &tensors).unwrap();
        bytes
    }

    #[test]
    fn writes_and_reads_every_value_type() {
        let bytes = sample();
        let file = GgufFile::parse(&bytes, Path::new("x.gguf")).unwrap();
        assert_eq!(file.version, 3);
        assert_eq!(file.get("a.i8"), Some(&Value::I8(-7)));
        assert_eq!(file.get("a.i64"), Some(&Value::I64(-(1 << 40))));
        assert_eq!(file.get("a.list").and_then(Value::as_array).map(<[Value]>::len), Some(2));
        assert_eq!(file.tensors[0].torch_shape(), vec![2, 3]);
        assert_eq!(file.tensor_f32(&file.tensors[0]), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(file.tensors[1].offset % 32, 0);
        assert_eq!(file.tensor_f32(&file.tensors[1]), vec![9.]);
    }

    #[test]
    fn version_2_reads_like_version_3() {
        // v2 differs from v3 only in allowing big-endian files, which no one writes.
        let mut bytes = sample();
        bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
        let file = GgufFile::parse(&bytes, Path::new("x.gguf")).unwrap();
        assert_eq!(file.version, 2);
        assert_eq!(file.tensor_f32(&file.tensors[1]), vec![9.]);
    }

    #[test]
    fn truncated_files_and_lying_counts_are_errors() {
        let bytes = sample();
        for cut in [3, 10, 40, bytes.len() - 29] {
            // the last cuts into the last tensor
            let err = GgufFile::parse(&bytes[..cut], Path::new("x.gguf")).err().unwrap();
            let message = format!("{err:#}");
            assert!(message.contains("x.gguf"), "{message}");
            assert!(message.contains("truncated") || message.contains("not a GGUF"), "{message}");
        }
        let mut lying = bytes.clone();
        lying[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
        let err = GgufFile::parse(&lying, Path::new("x.gguf")).err().unwrap();
        assert!(format!("{err:#}").contains("tensor count"), "{err:#}");
    }
}
