//! What a reward model reads: a prompt and one response as token ids, and the right-padded
//! batch of those sequences.
//!
//! A decoder reads the conversation rendered with its chat template and closed as SFT closes
//! an answer, so it scores exactly what the policy generates; its score is read at the last
//! token. A cross-encoder reads `[CLS] prompt [SEP] response [SEP]`.

use burn::prelude::*;

use super::chat::{Message, Role};
use super::pair::PairEncoder;
use super::sft::{FitReport, SftEncoder, SftRow};
use crate::data::sft::Truncation;

/// One prompt + response, as the model reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub ids: Vec<u32>,
    /// Segment of each token (cross-encoders: 0 prompt, 1 response; decoders: all 0).
    pub type_ids: Vec<u32>,
}

pub enum ResponseEncoder<'a> {
    Decoder(SftEncoder<'a>),
    /// With `Drop`, a pair that does not fit is skipped instead of losing its prompt's start.
    CrossEncoder(Box<PairEncoder>, Truncation),
}

impl ResponseEncoder<'_> {
    /// `Ok(None)` when the sequence is too long and truncation drops it (`report` counts it).
    pub fn encode(
        &self,
        prompt: &[Message],
        response: &str,
        report: &mut FitReport,
    ) -> Result<Option<Sequence>, String> {
        match self {
            Self::Decoder(encoder) => {
                let mut messages = prompt.to_vec();
                messages.push(Message::new(Role::Assistant, response));
                let example = encoder.encode(&SftRow::Chat(messages), report)?;
                Ok(example.map(|e| Sequence { type_ids: vec![0; e.ids.len()], ids: e.ids }))
            }
            Self::CrossEncoder(encoder, truncation) => {
                let pair = encoder
                    .encode(&plain_transcript(prompt), response)
                    .map_err(|e| e.to_string())?;
                if pair.truncated && *truncation == Truncation::Drop {
                    report.dropped += 1;
                    return Ok(None);
                }
                report.truncated += usize::from(pair.truncated);
                Ok(Some(Sequence { ids: pair.ids, type_ids: pair.type_ids }))
            }
        }
    }
}

/// A conversation as the plain text a cross-encoder reads as its first segment: a lone user
/// turn as it is, longer ones as `Human: …` / `Assistant: …` lines.
pub fn plain_transcript(messages: &[Message]) -> String {
    if let [only] = messages {
        return only.content.clone();
    }
    let turns: Vec<String> = messages
        .iter()
        .map(|m| match m.role {
            Role::System => m.content.clone(),
            Role::User => format!("Human: {}", m.content),
            Role::Assistant => format!("Assistant: {}", m.content),
        })
        .collect();
    turns.join("\n\n")
}

/// Sequences padded on the right: ids, token types and attention mask, all `[B, T]`.
#[derive(Debug, Clone)]
pub struct SequenceBatch {
    pub input_ids: Tensor<2, Int>,
    pub token_type_ids: Tensor<2, Int>,
    pub attention_mask: Tensor<2, Int>,
    /// `[B]` each row's last position whose id is not the padding id: where
    /// `*ForSequenceClassification` in `transformers` reads a decoder's score. With pad = eos,
    /// a sequence closed by eos is read at its last token before it.
    pub last_non_pad: Tensor<1, Int>,
    /// Real (non-padding) tokens.
    pub token_count: usize,
}

impl SequenceBatch {
    pub fn new(sequences: &[&Sequence], pad_id: u32, device: &Device) -> Self {
        let b = sequences.len();
        let t = sequences.iter().map(|s| s.ids.len()).max().unwrap_or(1).max(1);
        let mut ids = vec![pad_id as i64; b * t];
        let mut types = vec![0i64; b * t];
        let mut mask = vec![0i64; b * t];
        let last_non_pad: Vec<i64> = sequences
            .iter()
            .map(|s| s.ids.iter().rposition(|&id| id != pad_id).unwrap_or(0) as i64)
            .collect();
        for (row, sequence) in sequences.iter().enumerate() {
            let start = row * t;
            for (i, (&id, &kind)) in sequence.ids.iter().zip(&sequence.type_ids).enumerate() {
                ids[start + i] = id as i64;
                types[start + i] = kind as i64;
                mask[start + i] = 1;
            }
        }
        let tensor = |values: Vec<i64>| Tensor::from_data(TensorData::new(values, [b, t]), device);
        Self {
            input_ids: tensor(ids),
            token_type_ids: tensor(types),
            attention_mask: tensor(mask),
            last_non_pad: Tensor::from_data(TensorData::new(last_non_pad, [b]), device),
            token_count: sequences.iter().map(|s| s.ids.len()).sum(),
        }
    }
}

/// Indices of sequences of `lengths` in inference batches of similar length (less padding),
/// shortest first.
pub fn batches_by_length(lengths: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order.chunks(INFERENCE_BATCH_SIZE).map(<[usize]>::to_vec).collect()
}

/// Runs `forward` over `sequences` in batches of similar length and returns its rows `[B, K]`
/// in input order; `forward` also gets the batch's indices into `sequences`.
pub fn run_sorted(
    sequences: &[&Sequence],
    pad: u32,
    device: &Device,
    forward: impl Fn(&SequenceBatch, &[usize]) -> Tensor<2>,
) -> Vec<Vec<f32>> {
    let mut rows = vec![Vec::new(); sequences.len()];
    let lengths: Vec<usize> = sequences.iter().map(|s| s.ids.len()).collect();
    for chunk in batches_by_length(&lengths) {
        let batch: Vec<&Sequence> = chunk.iter().map(|&i| sequences[i]).collect();
        let output = forward(&SequenceBatch::new(&batch, pad, device), &chunk);
        let k = output.dims()[1];
        let values = output.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 output");
        for (&i, row) in chunk.iter().zip(values.chunks(k)) {
            rows[i] = row.to_vec();
        }
    }
    rows
}

/// Sequences per forward pass at inference.
pub const INFERENCE_BATCH_SIZE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_question_stays_as_it_is_and_dialogues_name_their_speakers() {
        let q = Message::new(Role::User, "q?");
        assert_eq!(plain_transcript(std::slice::from_ref(&q)), "q?");
        let dialogue = [q.clone(), Message::new(Role::Assistant, "a."), q];
        assert_eq!(plain_transcript(&dialogue), "Human: q?\n\nAssistant: a.\n\nHuman: q?");
    }
}
