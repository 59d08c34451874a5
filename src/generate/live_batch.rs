//! Continuous batching: a decoding batch that rows join and leave between steps, so a server
//! decodes every request in flight with one forward pass a step, however they arrive.
//!
//! Rows are aligned at their last token, as left padding aligns a batch of prompts: a row
//! shorter than the batch starts after empty slots that its key mask hides, and a longer one
//! that joins pads the others in front. Each row keeps its own positions, so where its tokens
//! sit in the cache does not change what it computes.

use burn::prelude::*;

use super::Conversation;
use crate::model::PaddedBatch;
use crate::model::kv_cache::KvCache;

/// Padding in front of every row that is worth a copy of the cache to drop.
const TRIM_AT: usize = 64;

/// Rows whose prompts went through the model, aligned at their last token, with the logits
/// of the token after it: ready to join a [`LiveBatch`].
pub struct Prefilled {
    pub(super) cache: KvCache,
    /// `[k, L]`: 1 where a slot holds one of the row's tokens.
    pub(super) key_mask: Tensor<2, Int>,
    /// `[k, V]`.
    pub(super) logits: Tensor<2>,
    pub(super) tokens: Vec<Vec<u32>>,
}

impl Prefilled {
    /// A conversation whose every token went through the model ([`super::Generator::prefill`]),
    /// `logits` `[1, V]` those of its next token.
    pub fn conversation(conversation: Conversation, logits: Tensor<2>) -> Self {
        assert!(conversation.pending.is_empty(), "a row joins with every token fed");
        let len = conversation.tokens.len();
        let key_mask = Tensor::ones([1, len], &logits.device());
        Self { cache: conversation.cache, key_mask, logits, tokens: vec![conversation.tokens] }
    }

    /// The rows `rows`, in that order: a row repeated is one prompt fanned out to several
    /// answers.
    pub fn select(mut self, rows: &[usize]) -> Self {
        let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let index = Tensor::<1, Int>::from_data(index.as_slice(), &self.logits.device());
        self.cache.select_rows(&index);
        Self {
            cache: self.cache,
            key_mask: self.key_mask.select(0, index.clone()),
            logits: self.logits.select(0, index),
            tokens: rows.iter().map(|&r| self.tokens[r].clone()).collect(),
        }
    }
}

#[derive(Default)]
pub struct LiveBatch {
    /// The tokens fed to each row, in order.
    rows: Vec<Vec<u32>>,
    live: Option<Live>,
}

/// The device side of a non-empty batch.
struct Live {
    cache: KvCache,
    /// `[B, L]`: 1 where a slot holds one of the row's tokens.
    key_mask: Tensor<2, Int>,
    /// `[B, V]`: each row's logits for its next token.
    logits: Tensor<2>,
}

impl LiveBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows decoding.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds prefilled rows after the batch's rows.
    pub fn join(&mut self, mut rows: Prefilled) {
        let len = rows.key_mask.dims()[1];
        self.live = Some(match self.live.take() {
            None => Live { cache: rows.cache, key_mask: rows.key_mask, logits: rows.logits },
            Some(mut live) => {
                let batch_len = live.cache.len();
                let device = rows.logits.device();
                let mask = |mask: Tensor<2, Int>, pad: usize| match pad {
                    0 => mask,
                    _ => {
                        let zeros = Tensor::zeros([mask.dims()[0], pad], &device);
                        Tensor::cat(vec![zeros, mask], 1)
                    }
                };
                if len > batch_len {
                    live.cache.pad_front(len - batch_len);
                    live.key_mask = mask(live.key_mask, len - batch_len);
                } else {
                    rows.cache.pad_front(batch_len - len);
                    rows.key_mask = mask(rows.key_mask, batch_len - len);
                }
                live.cache.append_rows(&rows.cache);
                Live {
                    cache: live.cache,
                    key_mask: Tensor::cat(vec![live.key_mask, rows.key_mask], 0),
                    logits: Tensor::cat(vec![live.logits, rows.logits], 0),
                }
            }
        });
        self.rows.extend(rows.tokens);
    }

    /// Every row's next-token logits, `[B, V]` (row-major) on the host.
    pub fn logits(&self) -> Vec<f32> {
        match &self.live {
            Some(live) => {
                live.logits.clone().into_data().convert::<f32>().try_to_vec().expect("f32")
            }
            None => Vec::new(),
        }
    }

    /// Row `row` as a conversation of its own (a copy; the batch is unchanged), with `pending`
    /// chosen but not fed: a follow-up that shares its tokens starts from its cache.
    pub fn detach(&self, row: usize, pending: u32) -> Conversation {
        let live = self.live.as_ref().expect("a row to detach");
        let mut cache = live.cache.clone();
        let device = live.logits.device();
        cache.select_rows(&Tensor::<1, Int>::from_data([row as i64], &device));
        cache.trim_front(cache.len() - self.rows[row].len());
        Conversation { cache, tokens: self.rows[row].clone(), pending: vec![pending] }
    }

    /// Keeps the rows `keep` (in that order); the others leave the batch.
    pub fn retain(&mut self, keep: &[usize]) {
        if keep.is_empty() {
            self.rows.clear();
            self.live = None;
            return;
        }
        let Some(live) = self.live.as_mut() else { return };
        if keep.len() < self.rows.len() || keep.iter().enumerate().any(|(i, &row)| i != row) {
            let index: Vec<i64> = keep.iter().map(|&r| r as i64).collect();
            let index = Tensor::<1, Int>::from_data(index.as_slice(), &live.logits.device());
            live.cache.select_rows(&index);
            live.key_mask = live.key_mask.clone().select(0, index.clone());
            live.logits = live.logits.clone().select(0, index);
            self.rows = keep.iter().map(|&r| std::mem::take(&mut self.rows[r])).collect();
        }
        let longest = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let pad = live.cache.len() - longest;
        if pad >= TRIM_AT {
            let len = live.cache.len();
            live.cache.trim_front(pad);
            live.key_mask = live.key_mask.clone().slice(s![.., pad..len]);
        }
    }

    /// Feeds each row its token through `forward(ids, batch, cache)`, which returns the
    /// logits of the token after it `[B, V]`.
    pub(super) fn step(
        &mut self,
        tokens: &[u32],
        forward: impl FnOnce(Tensor<2, Int>, &PaddedBatch, &mut KvCache) -> Tensor<2>,
    ) {
        let live = self.live.as_mut().expect("rows to step");
        let b = self.rows.len();
        assert_eq!(tokens.len(), b, "one token per row");
        let device = live.logits.device();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &device);
        // A row's position is how many tokens it holds, wherever they sit in the cache.
        let positions: Vec<i64> = self.rows.iter().map(|r| r.len() as i64).collect();
        let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [b, 1]), &device);
        live.key_mask = Tensor::cat(vec![live.key_mask.clone(), Tensor::ones([b, 1], &device)], 1);
        let batch = PaddedBatch::with_keys(live.key_mask.clone(), positions);
        live.logits = forward(ids, &batch, &mut live.cache);
        for (row, &token) in self.rows.iter_mut().zip(tokens) {
            row.push(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::generate::Generator;
    use crate::model::{preset, pretrained};

    #[test]
    fn rows_that_join_and_leave_compute_what_they_compute_alone() {
        let device = Device::default();
        let tok = crate::data::tokenizer::train_bpe(["a b c d e f g"].into_iter(), 300).unwrap();
        for name in ["tiny", "llama-tiny"] {
            let config = preset::resolve(name, &[], &tok, Path::new(".")).unwrap();
            device.seed(3);
            let model = pretrained::init_causal_lm(&config, &device).unwrap();
            let generator = Generator::new(&model, &tok, &config, &device);
            let alone = |tokens: &[u32]| {
                let mut conversation = generator.conversation();
                let (logits, _) = generator.prefill(&mut conversation, tokens).unwrap();
                logits.into_data().try_to_vec::<f32>().unwrap()
            };
            let mut batch = LiveBatch::new();
            let join = |batch: &mut LiveBatch, tokens: &[u32]| {
                let mut conversation = generator.conversation();
                let (logits, _) = generator.prefill(&mut conversation, tokens).unwrap();
                batch.join(Prefilled::conversation(conversation, logits));
            };
            let check = |batch: &LiveBatch, rows: &[Vec<u32>]| {
                let logits = batch.logits();
                let v = logits.len() / rows.len();
                for (i, row) in rows.iter().enumerate() {
                    let diff = logits[i * v..(i + 1) * v]
                        .iter()
                        .zip(alone(row))
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(diff < 1e-4, "{name}, row {i}: {diff}");
                }
            };
            let short: Vec<u32> = vec![5, 6, 7, 8, 9];
            let long: Vec<u32> = (20..110).collect();
            join(&mut batch, &short);
            generator.step(&mut batch, &[10]);
            join(&mut batch, &long); // longer: the first row gets padding in front
            join(&mut batch, &short[..2]); // shorter: padded itself
            generator.step(&mut batch, &[11, 12, 13]);
            let rows =
                [[&short[..], &[10, 11]].concat(), [&long[..], &[12]].concat(), vec![5, 6, 13]];
            check(&batch, &rows);

            // The long row leaves: the padding in front of the others is dropped.
            let detached = batch.detach(1, 14);
            batch.retain(&[2, 0]);
            assert_eq!(batch.live.as_ref().unwrap().cache.len(), rows[0].len());
            generator.step(&mut batch, &[15, 16]);
            let now = [[&rows[2][..], &[15]].concat(), [&rows[0][..], &[16]].concat()];
            check(&batch, &now);

            // New prompts prefilled together join as a block; a repeated row fans one out.
            let (a, b) = (vec![30, 31, 32], vec![40; 12]);
            batch.join(generator.prefill_batch(&[a.clone(), b.clone()]).select(&[1, 0, 1]));
            check(&batch, &[now[0].clone(), now[1].clone(), b.clone(), a.clone(), b.clone()]);
            generator.step(&mut batch, &[1, 2, 3, 4, 5]);
            let b3 = [&b[..], &[3]].concat();
            check(
                &batch,
                &[
                    [&now[0][..], &[1]].concat(),
                    [&now[1][..], &[2]].concat(),
                    b3,
                    [&a[..], &[4]].concat(),
                    [&b[..], &[5]].concat(),
                ],
            );

            // The detached row carries on from its own cache.
            let mut conversation = detached;
            let follow_up = [&rows[1][..], &[14, 17]].concat();
            let (logits, cached) = generator.prefill(&mut conversation, &follow_up).unwrap();
            assert_eq!(cached, rows[1].len());
            let logits = logits.into_data().try_to_vec::<f32>().unwrap();
            let diff = logits.iter().zip(alone(&follow_up)).map(|(a, b)| (a - b).abs());
            assert!(diff.fold(0.0, f32::max) < 1e-4);
        }
    }
}
