//! ggml's tensor types and their block layouts (ggml-common.h; `gguf-py`'s `quants.py`).
//!
//! A quantized tensor is a run of blocks; each block packs `block_len` values with its own
//! scale (and minimum). Dequantization computes in f32 in the same order of operations as
//! `gguf-py`, so the values are bit-for-bit the ones `transformers` loads.

use half::f16;

use super::quantize;

/// The tensor types `rlhf` reads (and, for F32, F16, Q8_0, Q5_0, Q4_K and Q6_K, writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
    BF16,
}

/// Elements in a k-quant super-block.
const QK_K: usize = 256;

impl GgmlType {
    pub const SUPPORTED: &'static str =
        "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K";

    /// (type, ggml id, name, elements per block, bytes per block)
    const TABLE: [(GgmlType, u32, &'static str, usize, usize); 11] = [
        (GgmlType::F32, 0, "F32", 1, 4),
        (GgmlType::F16, 1, "F16", 1, 2),
        (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
        (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
        (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
        (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
        (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
        (GgmlType::Q4K, 12, "Q4_K", QK_K, 144),
        (GgmlType::Q5K, 13, "Q5_K", QK_K, 176),
        (GgmlType::Q6K, 14, "Q6_K", QK_K, 210),
        (GgmlType::BF16, 30, "BF16", 1, 2),
    ];

    /// Names of the ggml types this reader does not handle, for error messages.
    const OTHERS: [(u32, &'static str); 19] = [
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (34, "TQ1_0"),
    ];

    fn row(self) -> (GgmlType, u32, &'static str, usize, usize) {
        *Self::TABLE.iter().find(|r| r.0 == self).expect("every type is in the table")
    }

    pub fn from_id(id: u32) -> Option<Self> {
        Self::TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// `Q3_K (11)` for a known id, `99` for an unknown one.
    pub fn describe_id(id: u32) -> String {
        let known = Self::TABLE.iter().map(|r| (r.1, r.2)).chain(Self::OTHERS);
        match known.into_iter().find(|(i, _)| *i == id) {
            Some((_, name)) => format!("{name} ({id})"),
            None => id.to_string(),
        }
    }

    pub fn id(self) -> u32 {
        self.row().1
    }

    pub fn name(self) -> &'static str {
        self.row().2
    }

    pub fn block_len(self) -> usize {
        self.row().3
    }

    /// Bytes of a tensor with ggml dims `dims`; the first (row) dimension must hold whole blocks.
    pub fn byte_size(self, dims: &[u64]) -> Result<u64, String> {
        let (_, _, name, block_len, block_bytes) = self.row();
        let row = dims.first().copied().unwrap_or(1);
        if row % block_len as u64 != 0 {
            return Err(format!("rows of {row} values do not fill {name} blocks of {block_len}"));
        }
        let elements = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        elements
            .and_then(|n| (n / block_len as u64).checked_mul(block_bytes as u64))
            .ok_or_else(|| "the size overflows".to_string())
    }

    /// The values of `bytes` (whole blocks) as f32.
    pub fn dequantize(self, bytes: &[u8]) -> Vec<f32> {
        let (_, _, _, block_len, block_bytes) = self.row();
        let mut out = Vec::with_capacity(bytes.len() / block_bytes * block_len);
        for block in bytes.chunks_exact(block_bytes) {
            match self {
                GgmlType::F32 => out.push(f32::from_le_bytes(block.try_into().expect("4 bytes"))),
                GgmlType::F16 => out.push(half_at(block, 0)),
                GgmlType::BF16 => out.push(f32::from_bits(u32::from(u16_at(block, 0)) << 16)),
                GgmlType::Q4_0 => q4_0(block, &mut out),
                GgmlType::Q4_1 => q4_1(block, &mut out),
                GgmlType::Q5_0 => q5_0(block, &mut out),
                GgmlType::Q5_1 => q5_1(block, &mut out),
                GgmlType::Q8_0 => q8_0(block, &mut out),
                GgmlType::Q4K => q4_k(block, &mut out),
                GgmlType::Q5K => q5_k(block, &mut out),
                GgmlType::Q6K => q6_k(block, &mut out),
            }
        }
        out
    }

    /// Encodes f32 values (whole blocks) as this type; only the types `rlhf model export`
    /// writes.
    pub fn quantize(self, values: &[f32]) -> Vec<u8> {
        match self {
            GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            GgmlType::Q8_0 => quantize::q8_0(values),
            GgmlType::Q5_0 => quantize::q5_0(values),
            GgmlType::Q4K => quantize::q4_k(values),
            GgmlType::Q6K => quantize::q6_k(values),
            other => unreachable!("export never writes {}", other.name()),
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// An f16 stored at byte `at`, widened to f32 (exactly).
fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16_at(b, at)).to_f32()
}

/// Nibble `j` of 32 packed in 16 bytes: the low nibbles hold values 0..16, the high ones 16..32.
fn nibble(qs: &[u8], j: usize) -> u8 {
    if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 }
}

fn q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half_at(b, 0);
    out.extend((0..32).map(|j| d * (nibble(&b[2..], j) as i8 - 8) as f32));
}

fn q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    out.extend((0..32).map(|j| d * nibble(&b[4..], j) as f32 + m));
}

/// A 5-bit value: the nibble plus bit `j` of the 32-bit `qh` as the fifth bit.
fn five_bits(qh: u32, qs: &[u8], j: usize) -> u8 {
    nibble(qs, j) | ((((qh >> j) & 1) as u8) << 4)
}

fn q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    out.extend((0..32).map(|j| d * (five_bits(qh, &b[6..], j) as i8 - 16) as f32));
}

fn q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    out.extend((0..32).map(|j| d * five_bits(qh, &b[8..], j) as f32 + m));
}

fn q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = half_at(b, 0);
    out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
}

/// The eight 6-bit (scale, min) pairs of a Q4_K / Q5_K super-block, packed in 12 bytes.
fn k_scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K and Q5_K: eight sub-blocks of 32; sub-block `i` reads the low (even `i`) or high (odd)
/// nibbles of bytes 32·(i/2)… of `qs`, plus bit `i` of each `qh` byte for Q5_K.
fn k_quant(b: &[u8], qh: Option<&[u8]>, qs: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (sc, mn) = k_scales_mins(&b[4..16]);
    for i in 0..8 {
        let scale = d * sc[i] as f32;
        let min = dmin * mn[i] as f32;
        let bytes = &qs[32 * (i / 2)..32 * (i / 2) + 32];
        for l in 0..32 {
            let low = if i % 2 == 0 { bytes[l] & 0x0F } else { bytes[l] >> 4 };
            let high = qh.map_or(0, |qh| ((qh[l] >> i) & 1) << 4);
            out.push(scale * (low | high) as f32 - min);
        }
    }
}

fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    k_quant(b, None, &b[16..144], out);
}

fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    k_quant(b, Some(&b[16..48]), &b[48..176], out);
}

/// Q6_K: 256 values in two halves of 128; value p of a half takes 4 low bits from `ql` and 2
/// high bits from `qh`, minus 32, times one of 16 signed 8-bit scales (one per 16 values).
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = half_at(b, 208);
    for half in 0..2 {
        for p in 0..128 {
            let low = (ql[64 * half + p % 64] >> (4 * (p / 64))) & 0x0F;
            let high = (qh[32 * half + p % 32] >> (2 * (p / 32))) & 0x03;
            let q = (low | (high << 4)) as i8 - 32;
            let scale = d * scales[(128 * half + p) / 16] as i8 as f32;
            out.push(scale * q as f32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trip_is_within_half_a_step() {
        let values: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) / 7.0).collect();
        let bytes = GgmlType::Q8_0.quantize(&values);
        assert_eq!(bytes.len(), 2 * 34);
        let back = GgmlType::Q8_0.dequantize(&bytes);
        for (block, chunk) in values.chunks(32).zip(back.chunks(32)) {
            let step = block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (a, b) in block.iter().zip(chunk) {
                assert!((a - b).abs() <= step * 0.5 + 1e-3 * step, "{a} vs {b}");
            }
        }
    }

    /// 512 values in two super-blocks, their magnitude growing by sub-block of 32, with one
    /// sub-block of zeros.
    fn ramp() -> Vec<f32> {
        (0..512)
            .map(|i| {
                let v = ((i * 37 % 101) as f32 - 50.0) / 40.0 * (1.0 + (i / 32) as f32 * 0.3);
                if (256..288).contains(&i) { 0.0 } else { v }
            })
            .collect()
    }

    /// The sha256 of `ramp()` encoded by ggml's own `ggml_quantize_chunk` (llama-cpp-python
    /// 0.3.36's libggml-base, no importance matrix): numpy computes `ramp()` in f32 exactly as
    /// above, then
    ///   lib.ggml_quantize_chunk(type, x.ctypes.data, out, 0, 1, 512, None)
    /// with type 6 (Q5_0), 12 (Q4_K), 14 (Q6_K).
    #[test]
    fn encoders_write_the_bytes_ggml_writes() {
        use sha2::{Digest, Sha256};
        let values = ramp();
        for (kind, sha256) in [
            (GgmlType::Q5_0, "9c1cf54cf3ac780632ee13f6c8f4f4e55ecc939f808a8204d85651c195194f30"),
            (GgmlType::Q4K, "7e9cbbb3ea6dfb25fbe6bc812d54ad09b8487e420a2e98de7869ae52e2e4bea3"),
            (GgmlType::Q6K, "2fb2dd191756911bfa5809969ed1ee0eb901b56279c5e309d97ba12102cc83db"),
        ] {
            let bytes = kind.quantize(&values);
            assert_eq!(bytes.len() as u64, kind.byte_size(&[512]).unwrap(), "{}", kind.name());
            let digest: String =
                Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(digest, sha256, "{} differs from ggml's encoding", kind.name());
        }
    }

    /// Encoded then decoded, each type keeps the values within its resolution: the RMS error
    /// relative to the values' RMS, and no value off by more than a step of its (sub-)block.
    #[test]
    fn encoders_round_trip_within_a_step() {
        let values = ramp();
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        for (kind, block, levels, relative) in [
            (GgmlType::Q8_0, 32, 254.0, 0.005),
            (GgmlType::Q5_0, 32, 31.0, 0.04),
            (GgmlType::Q4K, 32, 15.0, 0.08),
            (GgmlType::Q6K, 16, 63.0, 0.02),
        ] {
            let back = kind.dequantize(&kind.quantize(&values));
            let errors: Vec<f32> = values.iter().zip(&back).map(|(a, b)| a - b).collect();
            let ratio = rms(&errors) / rms(&values);
            assert!(ratio < relative, "{}: relative RMS error {ratio}", kind.name());
            for (chunk, (x, e)) in values.chunks(block).zip(errors.chunks(block)).enumerate() {
                let (lo, hi) = x.iter().fold((0f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
                let step = (hi - lo) / levels;
                let worst = e.iter().fold(0f32, |m, v| m.max(v.abs()));
                assert!(
                    worst <= step * 1.01 + 1e-6,
                    "{} block {chunk}: off by {worst}, step {step}",
                    kind.name()
                );
            }
        }
        let zeros = vec![0f32; 256];
        for kind in [GgmlType::Q8_0, GgmlType::Q5_0, GgmlType::Q4K, GgmlType::Q6K] {
            assert_eq!(kind.dequantize(&kind.quantize(&zeros)), zeros, "{}", kind.name());
        }
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 0.5, m = -1: value = 0.5·q − 1; the low nibbles come first.
        let mut block = Vec::new();
        block.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        block.extend((0..16u8).map(|j| j | (15 - j) << 4));
        let values = GgmlType::Q4_1.dequantize(&block);
        assert_eq!(values[0], -1.0);
        assert_eq!(values[15], 6.5);
        assert_eq!(values[16], 6.5);
        assert_eq!(values[31], -1.0);
    }

    #[test]
    fn sizes_and_names() {
        assert_eq!(GgmlType::Q6K.byte_size(&[256, 3]), Ok(630));
        assert!(GgmlType::Q4_0.byte_size(&[40, 2]).is_err());
        assert_eq!(GgmlType::describe_id(11), "Q3_K (11)");
        assert_eq!(GgmlType::describe_id(99), "99");
        assert_eq!(GgmlType::from_id(12), Some(GgmlType::Q4K));
    }
}
