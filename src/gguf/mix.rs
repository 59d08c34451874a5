//! Which ggml type each tensor gets in an export: llama.cpp's converter's rules for f32, f16
//! and q8_0 (`convert_hf_to_gguf.py`), and `llama-quantize`'s Q4_K_M recipe for q4_k
//! (`src/llama-quant.cpp`), so `--type q4_k` writes the file people download as "Q4_K_M".

use super::quant::GgmlType;

/// How export stores the matrices; vectors (norms, biases) and learned positions stay f32, as
/// in llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
    /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the output matrix and for the value and
    /// down projections of some layers.
    #[value(name = "q4_k", alias = "q4_k_m")]
    Q4K,
}

impl ExportType {
    /// `general.file_type`: llama.cpp's `LLAMA_FTYPE_ALL_F32`, `MOSTLY_F16`, `MOSTLY_Q8_0`,
    /// `MOSTLY_Q4_K_M`.
    pub fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q8_0 => 7,
            ExportType::Q4K => 15,
        }
    }

    /// The name users know the file type by.
    pub fn label(self) -> &'static str {
        match self {
            ExportType::F32 => "F32",
            ExportType::F16 => "F16",
            ExportType::Q8_0 => "Q8_0",
            ExportType::Q4K => "Q4_K_M",
        }
    }
}

/// The type choice for one model: the export type, the number of blocks, and whether the output
/// matrix is the token embedding.
pub struct Mix {
    pub kind: ExportType,
    pub layers: usize,
    pub tied: bool,
}

impl Mix {
    /// The type of the tensor llama.cpp names `name`, with ggml dims `dims` (row length first).
    pub fn tensor_type(&self, name: &str, dims: &[u64]) -> GgmlType {
        let kept_in_f32 = dims.len() < 2
            || !name.ends_with(".weight")
            || name.ends_with("_norm.weight")
            || name == "position_embd.weight";
        if kept_in_f32 {
            return GgmlType::F32;
        }
        let row = dims[0];
        match self.kind {
            ExportType::F32 => GgmlType::F32,
            ExportType::F16 => GgmlType::F16,
            // The converter writes what does not fill Q8_0 blocks as f16.
            ExportType::Q8_0 if row % 32 == 0 => GgmlType::Q8_0,
            ExportType::Q8_0 => GgmlType::F16,
            ExportType::Q4K => fallback(self.q4_k_m(name, row), row),
        }
    }

    /// `llama_tensor_get_type_impl` for `LLAMA_FTYPE_MOSTLY_Q4_K_M`, for the tensors of the
    /// architectures we export (no experts).
    fn q4_k_m(&self, name: &str, row: u64) -> GgmlType {
        let output = name == "output.weight" || (self.tied && name == "token_embd.weight");
        if output {
            // Q6_K where the rows fill its super-blocks, else Q8_0.
            return if row % 256 == 0 { GgmlType::Q6K } else { GgmlType::Q8_0 };
        }
        // The value projection (or GPT-2's fused q/k/v) and the down projection take Q6_K in
        // the first and last eighth of the layers and every third one between. llama.cpp
        // counts these tensors in the order it sorts them, by layer, so the count is the layer.
        let more_bits = ["attn_v.weight", "attn_qkv.weight", "ffn_down.weight"]
            .iter()
            .any(|leaf| name.ends_with(leaf))
            && layer_of(name).is_some_and(|layer| use_more_bits(layer, self.layers));
        if more_bits { GgmlType::Q6K } else { GgmlType::Q4K }
    }
}

/// `use_more_bits` in llama-quant.cpp.
fn use_more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// `blk.N.…` → N.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// `tensor_type_fallback`: a k-quant whose super-blocks a row does not fill falls back to a
/// 32-value type of about as many bits (Q4_K → Q5_0, Q6_K → Q8_0), and a row that does not fill
/// those either to f16.
fn fallback(chosen: GgmlType, row: u64) -> GgmlType {
    let fits = |t: GgmlType| row % t.block_len() as u64 == 0;
    if fits(chosen) {
        return chosen;
    }
    let smaller = match chosen {
        GgmlType::Q4K => GgmlType::Q5_0,
        GgmlType::Q5K => GgmlType::Q5_1,
        GgmlType::Q6K => GgmlType::Q8_0,
        other => other,
    };
    if fits(smaller) { smaller } else { GgmlType::F16 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q4_k(layers: usize, tied: bool) -> Mix {
        Mix { kind: ExportType::Q4K, layers, tied }
    }

    #[test]
    fn q4_k_m_gives_more_bits_where_llama_cpp_does() {
        // 30 layers (as SmolLM2-135M): n/8 = 3, 7n/8 = 26; between, every third from layer 5.
        let more: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(more, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
        let mix = q4_k(30, true);
        assert_eq!(mix.tensor_type("blk.5.attn_v.weight", &[512, 128]), GgmlType::Q6K);
        assert_eq!(mix.tensor_type("blk.6.attn_v.weight", &[512, 128]), GgmlType::Q4K);
        assert_eq!(mix.tensor_type("blk.29.ffn_down.weight", &[1536, 512]), GgmlType::Q6K);
        assert_eq!(mix.tensor_type("blk.4.ffn_down.weight", &[1536, 512]), GgmlType::Q4K);
        assert_eq!(mix.tensor_type("blk.0.attn_q.weight", &[512, 512]), GgmlType::Q4K);
        assert_eq!(mix.tensor_type("blk.0.ffn_gate.weight", &[512, 1536]), GgmlType::Q4K);
        assert_eq!(mix.tensor_type("blk.0.attn_norm.weight", &[512]), GgmlType::F32);
        assert_eq!(mix.tensor_type("blk.0.attn_q.bias", &[512]), GgmlType::F32);
        // Tied: the embedding is the output matrix.
        assert_eq!(mix.tensor_type("token_embd.weight", &[512, 49152]), GgmlType::Q6K);
        let untied = q4_k(30, false);
        assert_eq!(untied.tensor_type("token_embd.weight", &[512, 49152]), GgmlType::Q4K);
        assert_eq!(untied.tensor_type("output.weight", &[512, 49152]), GgmlType::Q6K);
        // SmolLM2's rows of 576 fill no super-block: Q5_0 for Q4_K, Q8_0 for Q6_K.
        assert_eq!(mix.tensor_type("blk.5.attn_v.weight", &[576, 192]), GgmlType::Q8_0);
        assert_eq!(mix.tensor_type("blk.6.attn_v.weight", &[576, 192]), GgmlType::Q5_0);
        assert_eq!(mix.tensor_type("token_embd.weight", &[576, 49152]), GgmlType::Q8_0);
    }

    #[test]
    fn rows_that_do_not_fill_blocks_fall_back_as_in_llama_cpp() {
        let mix = q4_k(2, false);
        assert_eq!(mix.tensor_type("blk.1.attn_q.weight", &[64, 64]), GgmlType::Q5_0);
        assert_eq!(mix.tensor_type("blk.0.attn_qkv.weight", &[64, 192]), GgmlType::Q5_0);
        assert_eq!(mix.tensor_type("blk.1.attn_qkv.weight", &[64, 192]), GgmlType::Q8_0);
        assert_eq!(mix.tensor_type("output.weight", &[64, 300]), GgmlType::Q8_0);
        assert_eq!(mix.tensor_type("blk.0.ffn_up.weight", &[40, 80]), GgmlType::F16);
        assert_eq!(mix.tensor_type("position_embd.weight", &[64, 256]), GgmlType::F32);
        let q8 = Mix { kind: ExportType::Q8_0, layers: 2, tied: false };
        assert_eq!(q8.tensor_type("blk.0.ffn_up.weight", &[40, 80]), GgmlType::F16);
        assert_eq!(q8.tensor_type("position_embd.weight", &[64, 256]), GgmlType::F32);
    }
}
