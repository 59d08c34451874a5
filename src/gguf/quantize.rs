//! The block encoders `rlhf model export` writes with: ggml's reference quantizers
//! (`ggml-quants.c`, `quantize_row_*_ref`), which are what `llama-quantize` runs when it has no
//! importance matrix. Re-derived here from their description, step for step and in the same f32
//! order of operations, so a file we write holds what llama.cpp would have written from the same
//! f32 weights (up to the fused multiply-adds a C compiler may use: see docs/gguf.md).
//!
//! Layouts (ggml-common.h) are the ones quant.rs reads back:
//! - Q8_0, 32 values: f16 scale d, 32 × i8; x = d·q.
//! - Q5_0, 32 values: f16 d, u32 of fifth bits, 16 bytes of nibbles; x = d·(q − 16).
//! - Q4_K, 256 values: f16 d, f16 dmin, 12 bytes of eight 6-bit (scale, min) pairs, 128 bytes of
//!   nibbles; in sub-block j of 32, x = d·scale_j·q − dmin·min_j.
//! - Q6_K, 256 values: 128 bytes of low nibbles, 64 of high bit pairs, sixteen i8 scales, f16 d;
//!   in sub-block j of 16, x = d·scale_j·(q − 32).

use half::f16;

/// Elements in a k-quant super-block.
const QK_K: usize = 256;

/// Below this, a group of weights counts as all zero (`GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: round half to even (its magic-number trick does exactly that for the
/// magnitudes it is used on, below 2²²).
fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

fn half(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// f32 → f16 → f32, as a block's stored scale reads back.
fn through_half(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Q8_0: scale = max |x| / 127, values rounded half away from zero.
pub fn q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for x in values.chunks_exact(32) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&half(d));
        out.extend(x.iter().map(|v| (v * inverse).round() as i8 as u8));
    }
    out
}

/// Q5_0: the value of largest magnitude maps to −16, the rest by the same scale to 0..=31.
pub fn q5_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 22);
    for x in values.chunks_exact(32) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let inverse = if d == 0.0 { 0.0 } else { 1.0 / d };
        // Truncation toward zero after + 16.5 is rounding to nearest for the shifted values.
        let q = |v: f32| ((v * inverse + 16.5) as i8).min(31) as u8;
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let (low, high) = (q(x[j]), q(x[j + 16]));
            qs[j] = (low & 0x0F) | ((high & 0x0F) << 4);
            qh |= u32::from(low >> 4) << j;
            qh |= u32::from(high >> 4) << (j + 16);
        }
        out.extend_from_slice(&half(d));
        out.extend_from_slice(&qh.to_le_bytes());
        out.extend_from_slice(&qs);
    }
    out
}

/// Q4_K: each sub-block of 32 gets the (scale, min) that `best_scale_and_min` finds, those are
/// quantized to 6 bits against the super-block's largest, and the values re-quantized against
/// the stored pairs.
pub fn q4_k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK_K * 144);
    for x in values.chunks_exact(QK_K) {
        let mut levels = [0u8; QK_K];
        let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..8 {
            let sub = &x[32 * j..32 * j + 32];
            // Weights: the sub-block's RMS plus each value's magnitude.
            let mut sum_x2 = 0f32;
            for &v in sub {
                sum_x2 += v * v;
            }
            let rms = (sum_x2 / 32.0).sqrt();
            let weights: [f32; 32] = std::array::from_fn(|l| rms + sub[l].abs());
            let (scale, min) =
                best_scale_and_min(sub, &weights, 15, &mut levels[32 * j..32 * j + 32]);
            scales[j] = scale;
            mins[j] = min;
            if scale > max_scale {
                max_scale = scale;
            }
            if min > max_min {
                max_min = min;
            }
        }
        let inverse_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
        let inverse_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        let mut packed = [0u8; 12];
        for j in 0..8 {
            let ls = (nearest_int(inverse_scale * scales[j]) as u8).min(63);
            let lm = (nearest_int(inverse_min * mins[j]) as u8).min(63);
            if j < 4 {
                packed[j] = ls;
                packed[j + 4] = lm;
            } else {
                // The low four bits in bytes 8..12, the top two above the first eight 6-bit fields.
                packed[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4);
                packed[j - 4] |= (ls >> 4) << 6;
                packed[j] |= (lm >> 4) << 6;
            }
        }
        let d = through_half(max_scale / 63.0);
        let dmin = through_half(max_min / 63.0);
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &packed);
            let scale = d * f32::from(sc);
            if scale == 0.0 {
                continue;
            }
            let min = dmin * f32::from(m);
            for l in 0..32 {
                let q = nearest_int((x[32 * j + l] + min) / scale);
                levels[32 * j + l] = q.clamp(0, 15) as u8;
            }
        }
        out.extend_from_slice(&half(max_scale / 63.0));
        out.extend_from_slice(&half(max_min / 63.0));
        out.extend_from_slice(&packed);
        // Byte l of each 32-byte group: sub-block 2g in the low nibble, 2g + 1 in the high one.
        for group in levels.chunks_exact(64) {
            out.extend((0..32).map(|l| group[l] | (group[l + 32] << 4)));
        }
    }
    out
}

/// Sub-block `j`'s 6-bit (scale, min) from the 12 packed bytes (`get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// ggml's `make_qkx2_quants` with Q4_K's search (21 candidate scales from (nmax − 1)/range in
/// steps of 0.1/range): the affine map x ≈ scale·q − min, q in 0..=nmax, with the least
/// weighted squared error, its levels written to `levels`. Returns (scale, min), min ≥ 0.
fn best_scale_and_min(x: &[f32], weights: &[f32], nmax: i32, levels: &mut [u8]) -> (f32, f32) {
    const RMIN: f32 = -1.0;
    const RDELTA: f32 = 0.1;
    const NSTEP: i32 = 20;
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = min.min(x[i]);
        max = max.max(x[i]);
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        levels.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        levels[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut trial = vec![0u8; n];
    for step in 0..=NSTEP {
        iscale = (RMIN + RDELTA * step as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            trial[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut error = 0f32;
            for i in 0..n {
                let diff = this_scale * trial[i] as f32 + this_min - x[i];
                error += weights[i] * (diff * diff);
            }
            if error < best_error {
                levels.copy_from_slice(&trial);
                best_error = error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q6_K: each sub-block of 16 gets a signed scale from `best_symmetric_scale`, those are
/// quantized to i8 against the super-block's largest, and the values re-quantized to −32..=31.
pub fn q6_k(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / QK_K * 210);
    for x in values.chunks_exact(QK_K) {
        let mut levels = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for (ib, scale) in scales.iter_mut().enumerate() {
            *scale =
                best_symmetric_scale(&x[16 * ib..16 * ib + 16], &mut levels[16 * ib..16 * ib + 16]);
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = *scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            out.extend_from_slice(&[0u8; 210]);
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = through_half(1.0 / iscale);
        let stored: [i8; 16] =
            std::array::from_fn(|ib| nearest_int(iscale * scales[ib]).min(127) as i8);
        for (j, &s) in stored.iter().enumerate() {
            let scale = d * f32::from(s);
            if scale == 0.0 {
                continue;
            }
            for l in 0..16 {
                let q = nearest_int(x[16 * j + l] / scale).clamp(-32, 31);
                levels[16 * j + l] = (q + 32) as u8;
            }
        }
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        // Per half of 128: byte l of ql holds values l and l + 64 (low nibbles), byte l + 32
        // values l + 32 and l + 96; byte l of qh the top two bits of all four.
        for (half_index, part) in levels.chunks_exact(128).enumerate() {
            let (ql, qh) = (&mut ql[64 * half_index..], &mut qh[32 * half_index..]);
            for l in 0..32 {
                let [a, b, c, e] = [part[l], part[l + 32], part[l + 64], part[l + 96]];
                ql[l] = (a & 0x0F) | ((c & 0x0F) << 4);
                ql[l + 32] = (b & 0x0F) | ((e & 0x0F) << 4);
                qh[l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(stored.iter().map(|&s| s as u8));
        out.extend_from_slice(&half(1.0 / iscale));
    }
    out
}

/// ggml's `make_qx_quants` with Q6_K's settings (nmax 32, weights x², 18 candidate scales
/// around −nmax / the largest value): x ≈ scale·q, q in −32..=31, levels stored as q + 32.
/// Returns the scale.
fn best_symmetric_scale(x: &[f32], levels: &mut [u8]) -> f32 {
    const NMAX: i32 = 32;
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        levels.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
    // Σ w·x·l and Σ w·l² for the levels of `iscale`, w = x².
    let sums = |iscale: f32| {
        let (mut sum_lx, mut sum_l2) = (0f32, 0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sum_lx += w * v * l;
            sum_l2 += w * l * l;
        }
        (sum_lx, sum_l2)
    };
    let fill = |iscale: f32, levels: &mut [u8]| {
        for (out, &v) in levels.iter_mut().zip(x) {
            *out = (level(iscale, v) + NMAX) as u8;
        }
    };
    let iscale = -(NMAX as f32) / max;
    fill(iscale, levels);
    let (sum_lx, sum_l2) = sums(iscale);
    let mut scale = if sum_l2 != 0.0 { sum_lx / sum_l2 } else { 0.0 };
    let mut best = scale * sum_lx;
    for step in (-9..=9).filter(|&s| s != 0) {
        let iscale = -(NMAX as f32 + 0.1 * step as f32) / max;
        let (sum_lx, sum_l2) = sums(iscale);
        if sum_l2 > 0.0 && sum_lx * sum_lx > best * sum_l2 {
            fill(iscale, levels);
            scale = sum_lx / sum_l2;
            best = scale * sum_lx;
        }
    }
    scale
}
