//! llama.cpp's tensor names ↔ `transformers`' for each architecture we import and export, one
//! table per family read in both directions, and the layout differences: the row order
//! llama.cpp gives Llama's q and k projections, and GPT-2's Conv1D weights, which
//! `transformers` stores transposed.

/// One family's names: (llama.cpp, `transformers`) pairs outside the blocks, and inside block N
/// (`blk.N.<leaf>` ↔ `<block_prefix>N.<path>`).
pub struct Names {
    top: &'static [(&'static str, &'static str)],
    block_prefix: &'static str,
    block: &'static [(&'static str, &'static str)],
}

/// Llama, Mistral and Qwen2 (`LlamaForCausalLM`, `Qwen2ForCausalLM`).
pub const LLAMA: Names = Names {
    top: &[
        ("token_embd", "model.embed_tokens"),
        ("output_norm", "model.norm"),
        ("output", "lm_head"),
    ],
    block_prefix: "model.layers.",
    block: &[
        ("attn_norm", "input_layernorm"),
        ("attn_q", "self_attn.q_proj"),
        ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"),
        ("attn_output", "self_attn.o_proj"),
        ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", "mlp.gate_proj"),
        ("ffn_up", "mlp.up_proj"),
        ("ffn_down", "mlp.down_proj"),
    ],
};

/// GPT-2 (`GPT2LMHeadModel`): learned positions, LayerNorm weights and biases, fused q/k/v.
pub const GPT2: Names = Names {
    top: &[
        ("token_embd", "transformer.wte"),
        ("position_embd", "transformer.wpe"),
        ("output_norm", "transformer.ln_f"),
        ("output", "lm_head"),
    ],
    block_prefix: "transformer.h.",
    block: &[
        ("attn_norm", "ln_1"),
        ("attn_qkv", "attn.c_attn"),
        ("attn_output", "attn.c_proj"),
        ("ffn_norm", "ln_2"),
        ("ffn_up", "mlp.c_fc"),
        ("ffn_down", "mlp.c_proj"),
    ],
};

/// The names of a `general.architecture`.
pub fn for_arch(arch: &str) -> Option<&'static Names> {
    match arch {
        "llama" | "qwen2" => Some(&LLAMA),
        "gpt2" => Some(&GPT2),
        _ => None,
    }
}

impl Names {
    /// `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`.
    pub fn to_hf(&self, name: &str) -> Option<String> {
        let (stem, param) = name.rsplit_once('.')?;
        if !matches!(param, "weight" | "bias") {
            return None;
        }
        if let Some((_, hf)) = self.top.iter().find(|(gguf, _)| *gguf == stem) {
            return Some(format!("{hf}.{param}"));
        }
        let (layer, leaf) = stem.strip_prefix("blk.")?.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (_, hf) = self.block.iter().find(|(gguf, _)| *gguf == leaf)?;
        Some(format!("{}{layer}.{hf}.{param}", self.block_prefix))
    }

    /// `model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`.
    pub fn to_gguf(&self, name: &str) -> Option<String> {
        let (stem, param) = name.rsplit_once('.')?;
        if let Some((gguf, _)) = self.top.iter().find(|(_, hf)| *hf == stem) {
            return Some(format!("{gguf}.{param}"));
        }
        let (layer, path) = stem.strip_prefix(self.block_prefix)?.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let (gguf, _) = self.block.iter().find(|(_, hf)| *hf == path)?;
        Some(format!("blk.{layer}.{gguf}.{param}"))
    }
}

/// GPT-2's projections are Conv1D layers, whose weights `transformers` stores `[in, out]`;
/// llama.cpp stores every matrix `[out, in]` (ggml dims `{in, out}`), so these are transposed
/// both ways.
pub fn is_conv1d_weight(hf: &str) -> bool {
    hf.starts_with(GPT2.block_prefix)
        && [".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"]
            .iter()
            .any(|leaf| hf.ends_with(leaf))
}

/// `values`, row-major `[rows, cols]`, transposed.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
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
        let (to_hf, to_gguf) = (|n: &str| LLAMA.to_hf(n), |n: &str| LLAMA.to_gguf(n));
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
        assert_eq!(to_hf("position_embd.weight"), None, "not a Llama tensor");
        for (gguf, hf) in [
            ("token_embd.weight", "transformer.wte.weight"),
            ("position_embd.weight", "transformer.wpe.weight"),
            ("output_norm.bias", "transformer.ln_f.bias"),
            ("blk.1.attn_qkv.bias", "transformer.h.1.attn.c_attn.bias"),
            ("blk.0.ffn_down.weight", "transformer.h.0.mlp.c_proj.weight"),
            ("blk.11.attn_output.weight", "transformer.h.11.attn.c_proj.weight"),
        ] {
            assert_eq!(GPT2.to_hf(gguf).as_deref(), Some(hf));
            assert_eq!(GPT2.to_gguf(hf).as_deref(), Some(gguf));
        }
        assert!(is_conv1d_weight("transformer.h.0.mlp.c_fc.weight"));
        assert!(!is_conv1d_weight("transformer.h.0.mlp.c_fc.bias"));
        assert!(!is_conv1d_weight("transformer.wte.weight"));
    }

    #[test]
    fn transpose_swaps_rows_and_columns() {
        // [[1 2 3] [4 5 6]] → [[1 4] [2 5] [3 6]]
        assert_eq!(transpose(&[1., 2., 3., 4., 5., 6.], 2, 3), vec![1., 4., 2., 5., 3., 6.]);
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
