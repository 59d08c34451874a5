//! Rows that begin with the same tokens — K sampled answers to one prompt — run those tokens
//! once: each distinct head fills a KV cache, the cache is fanned out to the rows that share
//! it, and only each row's own tail runs on top (under autodiff the tails' gradients flow back
//! into the one head pass). Any split gives the hidden states of the whole rows (tested); the
//! split only decides how much is saved.

use std::collections::HashMap;

use burn::prelude::*;

use super::decoder::Decoder;
use super::heads::check_length;
use super::kv_cache::KvCache;
use super::mask::PaddedBatch;

/// The distinct items, in order of first appearance, and for each item the index of its
/// distinct copy.
pub fn distinct<T: std::hash::Hash + Eq>(items: &[T]) -> (Vec<&T>, Vec<i64>) {
    let mut first = HashMap::new();
    let mut distinct = Vec::new();
    let source = items
        .iter()
        .map(|item| {
            *first.entry(item).or_insert_with(|| {
                distinct.push(item);
                distinct.len() as i64 - 1
            })
        })
        .collect();
    (distinct, source)
}

/// Where each row splits into a shared head and its own tail: the longest start it shares
/// with another row, at most `limits[i]` (a row keeps at least one token of its own).
pub fn shared_splits(rows: &[&[u32]], limits: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| rows[i]);
    let common = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let mut splits = vec![0; rows.len()];
    // Sorted, the row sharing the longest start with a row is one of its neighbours.
    for pair in order.windows(2) {
        let shared = common(rows[pair[0]], rows[pair[1]]);
        for &i in pair {
            splits[i] = splits[i].max(shared);
        }
    }
    splits.iter().zip(limits).map(|(&s, &limit)| s.min(limit)).collect()
}

/// Tokens a forward pass over `rows` split at `splits` computes: each distinct head once
/// (left-padded to the longest), each tail once (right-padded to the longest).
pub fn shared_cost(rows: &[&[u32]], splits: &[usize]) -> usize {
    let heads: Vec<&[u32]> = rows.iter().zip(splits).map(|(r, &s)| &r[..s]).collect();
    let (distinct_heads, _) = distinct(&heads);
    let head = splits.iter().max().copied().unwrap_or(0);
    let tail = rows.iter().zip(splits).map(|(r, s)| r.len() - s).max().unwrap_or(0);
    distinct_heads.len() * head + rows.len() * tail
}

/// Final hidden states `[B, S, D]` of each row's tail `rows[i][splits[i]..]`, right-padded
/// with `pad` to the longest tail S: the same as the whole rows' hidden states at those
/// positions. Every split must leave a tail of at least one token.
pub fn tail_hidden(
    body: &Decoder,
    rows: &[&[u32]],
    splits: &[usize],
    pad: u32,
    device: &Device,
) -> Tensor<3> {
    let b = rows.len();
    let heads: Vec<&[u32]> = rows.iter().zip(splits).map(|(r, &s)| &r[..s]).collect();
    let (distinct_heads, source) = distinct(&heads);
    let h = splits.iter().max().copied().unwrap_or(0);
    let s = rows.iter().zip(splits).map(|(r, &n)| r.len() - n).max().unwrap_or(1);
    assert!(rows.iter().zip(splits).all(|(r, &n)| n < r.len()), "every row keeps a tail");
    check_length(body, rows.iter().map(|r| r.len()).max().unwrap_or(0));
    let mut cache = KvCache::new(body.num_layers(), h + s);
    let mut key_mask = Vec::new();
    if h > 0 {
        let d = distinct_heads.len();
        let (mut ids, mut mask) = (vec![pad as i64; d * h], vec![0i64; d * h]);
        for (row, head) in distinct_heads.iter().enumerate() {
            let start = row * h + h - head.len(); // left padding: heads end where tails begin
            for (i, &token) in head.iter().enumerate() {
                ids[start + i] = token as i64;
                mask[start + i] = 1;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [d, h]), device);
        let mask = Tensor::<2, Int>::from_data(TensorData::new(mask, [d, h]), device);
        body.forward(ids, &PaddedBatch::new(mask.clone()), Some(&mut cache));
        let source = Tensor::<1, Int>::from_data(source.as_slice(), device);
        cache.select_rows(&source);
        key_mask.push(mask.select(0, source));
    }
    let (mut ids, mut mask, mut positions) =
        (vec![pad as i64; b * s], vec![0i64; b * s], vec![0i64; b * s]);
    for (row, (tokens, &split)) in rows.iter().zip(splits).enumerate() {
        // Padding keeps the row's last position: one past it may lie outside the window.
        for j in 0..s {
            positions[row * s + j] = (split + j).min(tokens.len() - 1) as i64;
        }
        for (j, &token) in tokens[split..].iter().enumerate() {
            ids[row * s + j] = token as i64;
            mask[row * s + j] = 1;
        }
    }
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), device);
    key_mask.push(Tensor::from_data(TensorData::new(mask, [b, s]), device));
    let positions = Tensor::<2, Int>::from_data(TensorData::new(positions, [b, s]), device);
    let batch = PaddedBatch::with_keys(Tensor::cat(key_mask, 1), positions);
    body.forward(ids, &batch, Some(&mut cache))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pretrained::tiny_causal_lm;

    #[test]
    fn rows_split_where_they_part_from_their_neighbours() {
        let rows: [&[u32]; 4] = [&[1, 2, 3, 4], &[1, 2, 3, 5], &[1, 2, 3, 4], &[7]];
        let splits = shared_splits(&rows, &[3, 3, 2, 0]);
        assert_eq!(splits, [3, 3, 2, 0]);
        assert_eq!(shared_splits(&rows, &[9, 9, 9, 9]), [4, 3, 4, 0]);
        // Heads [1 2 3] and [1 2] and [] → 3 distinct heads of 3 slots, 4 tails of 2.
        assert_eq!(shared_cost(&rows, &[3, 3, 2, 0]), 3 * 3 + 4 * 2);
    }

    #[test]
    fn tails_read_from_a_shared_head_equal_the_whole_rows() {
        let device = crate::device::DeviceSpec::Cpu.device().unwrap();
        for family in ["tiny", "llama-tiny"] {
            let lm = tiny_causal_lm(family, 3, &device);
            let rows: [&[u32]; 5] =
                [&[1, 2, 3, 4, 5], &[1, 2, 3, 6], &[1, 2, 3, 4, 5], &[9, 8], &[1, 2, 3, 0]];
            for splits in [[0, 0, 0, 0, 0], [3, 3, 4, 1, 3], [2, 3, 4, 0, 2]] {
                let tails = tail_hidden(&lm.body, &rows, &splits, 0, &device);
                for (row, (tokens, &split)) in rows.iter().zip(&splits).enumerate() {
                    let ids = tokens.iter().map(|&t| t as i64).collect::<Vec<_>>();
                    let ids = Tensor::<1, Int>::from_data(ids.as_slice(), &device).unsqueeze();
                    let mask = Tensor::<2, Int>::ones([1, tokens.len()], &device);
                    let whole = lm.hidden(ids, &PaddedBatch::new(mask), None);
                    let n = tokens.len() - split;
                    let expected = whole.slice(s![.., split.., ..]);
                    let got = tails.clone().slice(s![row..row + 1, 0..n, ..]);
                    let diff: f32 = (got - expected).abs().max().into_scalar();
                    assert!(diff < 1e-4, "{family}, splits {splits:?}, row {row}: {diff}");
                }
            }
        }
    }
}
