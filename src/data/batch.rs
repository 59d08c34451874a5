//! Examples → a right-padded batch of tensors for the next-token loss.

use burn::prelude::*;

use super::sft::Example;

/// A micro-batch: ids and attention mask `[B, T]`, and the flat positions (into `B·T`) whose
/// next token is a target, with those targets. Only those positions go through the LM head.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    pub input_ids: Tensor<2, Int>,
    pub attention_mask: Tensor<2, Int>,
    /// `[N]` indices into the flattened `[B·T]` positions that predict a target.
    pub predict_at: Tensor<1, Int>,
    /// `[N]` the token each of those positions must predict.
    pub targets: Tensor<1, Int>,
    /// N.
    pub target_count: usize,
    /// Real (non-padding) tokens in the batch.
    pub token_count: usize,
}

impl TokenBatch {
    /// Pads on the right with `pad_id` to the longest example.
    pub fn new(examples: &[&Example], pad_id: u32, device: &Device) -> Self {
        let b = examples.len();
        let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![pad_id as i64; b * t];
        let mut mask = vec![0i64; b * t];
        let (mut predict_at, mut targets) = (Vec::new(), Vec::new());
        for (row, example) in examples.iter().enumerate() {
            let start = row * t;
            for (i, &id) in example.ids.iter().enumerate() {
                ids[start + i] = id as i64;
                mask[start + i] = 1;
                if i > 0 && example.target[i] {
                    predict_at.push((start + i - 1) as i64);
                    targets.push(id as i64);
                }
            }
        }
        let target_count = targets.len();
        let token_count = examples.iter().map(|e| e.ids.len()).sum();
        let ints = |values: Vec<i64>, shape: Vec<usize>| TensorData::new(values, shape);
        Self {
            input_ids: Tensor::from_data(ints(ids, vec![b, t]), device),
            attention_mask: Tensor::from_data(ints(mask, vec![b, t]), device),
            predict_at: Tensor::from_data(ints(predict_at, vec![target_count]), device),
            targets: Tensor::from_data(ints(targets, vec![target_count]), device),
            target_count,
            token_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_target_tokens_are_predicted_and_padding_is_masked() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        let prompt_then_answer =
            Example { ids: vec![5, 6, 7, 8], target: vec![false, false, true, true] };
        let text = Example { ids: vec![9, 10], target: vec![true, true] };
        let batch = TokenBatch::new(&[&prompt_then_answer, &text], 0, &device);
        let ints = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        // Row 0 predicts 7 at position 1 and 8 at 2; row 1 (offset 4) predicts 10 at position 0.
        assert_eq!(ints(batch.predict_at), [1, 2, 4]);
        assert_eq!(ints(batch.targets), [7, 8, 10]);
        assert_eq!(ints(batch.attention_mask.reshape([8])), [1, 1, 1, 1, 1, 1, 0, 0]);
        assert_eq!((batch.target_count, batch.token_count), (3, 6));
    }
}
