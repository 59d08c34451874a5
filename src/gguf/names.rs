//! llama.cpp's tensor names ↔ `transformers`' for the Llama family, one table read in both
//! directions, and the row order llama.cpp gives the q and k projections.

/// (llama.cpp leaf, `transformers` path) inside a block: `blk.N.<leaf>` ↔ `model.layers.N.<path>`.
const BLOCK: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// Tensors outside the blocks.
const TOP: [(&str, &str); 3] =
    [("token_embd", "model.embed_tokens"), ("output_norm", "model.norm"), ("output", "lm_head")];

/// `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`.
pub fn to_hf(name: &str) -> Option<String> {
    let (stem, param) = name.rsplit_once('.')?;
    if !matches!(param, "weight" | "bias") {
        return None;
    }
    if let Some((_, hf)) = TOP.iter().find(|(gguf, _)| *gguf == stem) {
        return Some(format!("{hf}.{param}"));
    }
    let (layer, leaf) = stem.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (_, hf) = BLOCK.iter().find(|(gguf, _)| *gguf == leaf)?;
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// `model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`.
pub fn to_gguf(name: &str) -> Option<String> {
    let (stem, param) = name.rsplit_once('.')?;
    if let Some((gguf, _)) = TOP.iter().find(|(_, hf)| *hf == stem) {
        return Some(format!("{gguf}.{param}"));
    }
    let (layer, path) = stem.strip_prefix("model.layers.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (gguf, _) = BLOCK.iter().find(|(_, hf)| *hf == path)?;
    Some(format!("blk.{layer}.{gguf}.{param}"))
}

/// How many heads a q or k projection (weight or bias) of `transformers` name `name` holds,
/// given (attention heads, kv heads); `None` for every other tensor.
pub fn rotary_heads(name: &str, heads: usize, kv_heads: usize) -> Option<usize> {
    if name.contains(".self_attn.q_proj.") {
        Some(heads)
    } else if name.contains(".self_attn.k_proj.") {
        Some(kv_heads)
    } else {
        None
    }
}

/// llama.cpp rotates adjacent pairs (dimension 2i with 2i+1); `transformers` rotates halves
/// (i with i + d/2). Its converter reorders each head's output rows from halves to pairs;
/// `to_halves` undoes that, `to_pairs` redoes it. `values` is row-major `[rows, cols]`.
pub fn to_halves(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    permute_rows(values, heads, cols, |head_dim, r| {
        let (pair, member) = (r / 2, r % 2);
        member * head_dim / 2 + pair
    })
}

pub fn to_pairs(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    permute_rows(values, heads, cols, |head_dim, r| {
        let (half, i) = (r / (head_dim / 2), r % (head_dim / 2));
        2 * i + half
    })
}

/// Row `r` of each head in `values` moves to row `destination(head_dim, r)` of that head.
fn permute_rows(
    values: &[f32],
    heads: usize,
    cols: usize,
    destination: impl Fn(usize, usize) -> usize,
) -> Vec<f32> {
    let rows = values.len() / cols;
    let head_dim = rows / heads;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for r in 0..head_dim {
            let from = (h * head_dim + r) * cols;
            let to = (h * head_dim + destination(head_dim, r)) * cols;
            out[to..to + cols].copy_from_slice(&values[from..from + cols]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for (gguf, hf) in [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("blk.12.attn_k.bias", "model.layers.12.self_attn.k_proj.bias"),
            ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),
            ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
        ] {
            assert_eq!(to_hf(gguf).as_deref(), Some(hf));
            assert_eq!(to_gguf(hf).as_deref(), Some(gguf));
        }
        assert_eq!(to_hf("rope_freqs.weight"), None);
        assert_eq!(to_hf("blk.x.attn_q.weight"), None);
    }

    #[test]
    fn pairs_and_halves_are_inverse_and_interleave() {
        // One head of dimension 4, one column: halves [a0 a1 | b0 b1] ↔ pairs [a0 b0 a1 b1].
        let halves = [0.0, 1.0, 10.0, 11.0];
        assert_eq!(to_pairs(&halves, 1, 1), vec![0.0, 10.0, 1.0, 11.0]);
        let values: Vec<f32> = (0..48).map(|v| v as f32).collect(); // 2 heads × 8 rows × 3 cols
        assert_eq!(to_halves(&to_pairs(&values, 2, 3), 2, 3), values);
    }
}
