//! Weights laid out for decoding several rows at once. A decoding step multiplies a few rows
//! by every weight matrix; for such a skinny x·W, MKL packs all of W into its own layout on
//! every call, which costs more than the product. Stored as the contiguous transpose of
//! itself, W can run the product as (Wᵀ·xᵀ)ᵀ instead, which streams it (`plain_ops::skinny_matmul`
//! picks the orientation from the layout). The values are unchanged: the copy is a view of
//! the same matrix, only its memory order differs, so every other use of W still holds.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;

use super::naming::{is_linear_weight, transposed_contiguous};

/// `model` with every `Linear` weight stored as the contiguous transpose of itself (a copy of
/// those weights; everything else is shared).
pub fn for_decoding<M: Module>(model: M) -> M {
    model.map(&mut TransposeStorage { path: Vec::new() })
}

struct TransposeStorage {
    /// (field, container type) of each level entered.
    path: Vec<(String, String)>,
}

impl ModuleMapper for TransposeStorage {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if !is_linear_weight(&self.path) {
            return param;
        }
        let id = param.id;
        let stored = transposed_contiguous(param.val()).transpose();
        param.transform_for_load(stored, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::decoder::Decoder;
    use crate::model::gpt2::Gpt2Config;
    use crate::model::llama::LlamaConfig;
    use crate::model::mask::PaddedBatch;

    fn values<M: Module>(model: &M) -> Vec<Vec<f32>> {
        struct Collect(Vec<Vec<f32>>);
        impl burn::module::ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
            }
        }
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        collect.0
    }

    /// The copy holds the same numbers and computes the same hidden states, with few rows (the
    /// streamed products) and with many.
    fn check(decoder: Decoder, device: &Device) {
        let decoding = for_decoding(decoder.clone());
        assert_eq!(values(&decoding), values(&decoder));
        for (b, t) in [(3, 4), (4, 20)] {
            let ids: Vec<i64> = (0..b * t).map(|i| (i * 7 % 40 + 1) as i64).collect();
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, t]), device);
            let batch = PaddedBatch::new(Tensor::ones([b, t], device));
            let ours = decoding.forward(ids.clone(), &batch, None);
            let reference = decoder.forward(ids, &batch, None);
            let diff: f32 = (ours - reference).abs().max().into_scalar();
            assert!(diff < 1e-5, "{b} × {t} rows: max difference {diff}");
        }
    }

    #[test]
    fn decoding_copy_computes_what_the_model_computes() {
        let device = Device::default();
        let gpt2 = Gpt2Config {
            vocab_size: 48,
            n_positions: 32,
            n_embd: 16,
            n_layer: 2,
            n_head: 2,
            initializer_range: 0.3,
            ..Default::default()
        };
        check(Decoder::Gpt2(gpt2.init(&device).unwrap()), &device);
        let llama = LlamaConfig {
            vocab_size: 48,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            max_position_embeddings: 32,
            initializer_range: 0.3,
            ..Default::default()
        };
        check(Decoder::Llama(llama.init(&device).unwrap()), &device);
    }
}
