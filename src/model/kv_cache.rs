//! The KV cache: keys and values of every attention layer for the tokens seen so far, so a
//! decoding step computes only its new token.
//!
//! Storage is preallocated for the expected length and grows geometrically past it; new keys
//! are written in place (Burn's LibTorch backend mutates a uniquely owned tensor), never
//! concatenated.

use burn::prelude::*;

/// Keys and values of one layer: `[B, KV, capacity, hd]` each, filled up to the cache length.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
}

/// One layer's cache with the index where this forward pass writes.
pub struct LayerSlot<'a> {
    cache: &'a mut LayerCache,
    at: usize,
    capacity: usize,
}

impl LayerSlot<'_> {
    /// Stores k, v `[B, KV, T, hd]` after the cached tokens and returns all keys and values
    /// `[B, KV, at + T, hd]`.
    pub fn append(self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let end = self.at + k.dims()[2];
        let keys = store(self.cache.keys.take(), k, self.at, self.capacity);
        let values = store(self.cache.values.take(), v, self.at, self.capacity);
        let visible = |x: &Tensor<4>| x.clone().slice(s![.., .., 0..end, ..]);
        let out = (visible(&keys), visible(&values));
        self.cache.keys = Some(keys);
        self.cache.values = Some(values);
        out
    }
}

/// Keys and values for attention: with a cache, the new ones stored after the cached ones and
/// all of them returned; without, the new ones alone.
pub fn with_cached(slot: Option<LayerSlot>, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
    match slot {
        Some(slot) => slot.append(k, v),
        None => (k, v),
    }
}

/// Writes `new` at `at`, allocating or growing the buffer when it is missing or full.
fn store(buffer: Option<Tensor<4>>, new: Tensor<4>, at: usize, capacity: usize) -> Tensor<4> {
    let [b, kv, t, hd] = new.dims();
    let end = at + t;
    let buffer = match buffer {
        Some(buffer) => with_room(buffer, at, end, capacity),
        None => Tensor::<4>::zeros([b, kv, capacity.max(end), hd], &new.device()),
    };
    buffer.slice_assign(s![.., .., at..end, ..], new)
}

/// `buffer`, or a larger copy of its first `at` tokens when it cannot hold `end`.
fn with_room(buffer: Tensor<4>, at: usize, end: usize, capacity: usize) -> Tensor<4> {
    let [b, kv, room, hd] = buffer.dims();
    if room >= end {
        return buffer;
    }
    Tensor::<4>::zeros([b, kv, capacity.max(end), hd], &buffer.device())
        .slice_assign(s![.., .., 0..at, ..], buffer.slice(s![.., .., 0..at, ..]))
}

/// The cache of a whole decoder.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    /// Length to allocate for; doubled whenever a write would pass it.
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `n_layers` layers expecting about `capacity` tokens per row.
    pub fn new(n_layers: usize, capacity: usize) -> Self {
        Self { layers: vec![LayerCache::default(); n_layers], len: 0, capacity: capacity.max(1) }
    }

    /// Tokens cached per row.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where layer `index` writes the `new_tokens` of this forward pass.
    pub fn slot(&mut self, index: usize, new_tokens: usize) -> LayerSlot<'_> {
        while self.len + new_tokens > self.capacity {
            self.capacity *= 2;
        }
        LayerSlot { cache: &mut self.layers[index], at: self.len, capacity: self.capacity }
    }

    /// Every layer's key and value buffers `[B, KV, ≥ len + new_tokens, hd]` (`shape` is
    /// `[B, KV, hd]`, for the buffers no forward pass has made yet), taken out for a kernel that
    /// writes the next tokens in place (`llama_step`) and hands them back with
    /// [`Self::put_buffers`].
    pub fn take_buffers(
        &mut self,
        new_tokens: usize,
        shape: [usize; 3],
        device: &Device,
    ) -> Vec<[Tensor<4>; 2]> {
        while self.len + new_tokens > self.capacity {
            self.capacity *= 2;
        }
        let (at, end, capacity) = (self.len, self.len + new_tokens, self.capacity);
        let [b, kv, hd] = shape;
        let room = |x: Option<Tensor<4>>| match x {
            Some(x) => with_room(x, at, end, capacity),
            None => Tensor::zeros([b, kv, capacity, hd], device),
        };
        let layers = self.layers.iter_mut();
        layers.map(|l| [room(l.keys.take()), room(l.values.take())]).collect()
    }

    /// Puts back what [`Self::take_buffers`] took, in the same order.
    pub fn put_buffers(&mut self, buffers: Vec<[Tensor<4>; 2]>) {
        for (layer, [keys, values]) in self.layers.iter_mut().zip(buffers) {
            layer.keys = Some(keys);
            layer.values = Some(values);
        }
    }

    /// Marks the tokens of a finished forward pass as cached.
    pub fn advance(&mut self, new_tokens: usize) {
        self.len += new_tokens;
    }

    /// Forgets every token from `len` on; the next write goes there. Nothing is freed: the
    /// buffers keep their size for the tokens that replace the forgotten ones.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Puts `n` empty slots before every row's tokens (masked out by the caller): rows aligned
    /// at their last token make room this way for a longer row joining them.
    pub fn pad_front(&mut self, n: usize) {
        self.relayout(self.len + n, |x| {
            let [b, kv, _, hd] = x.dims();
            Tensor::cat(vec![Tensor::zeros([b, kv, n, hd], &x.device()), x], 2)
        });
    }

    /// Forgets the first `n` slots of every row (padding that no row needs any more).
    pub fn trim_front(&mut self, n: usize) {
        let len = self.len;
        self.relayout(len - n, |x| x.slice(s![.., .., n..len, ..]));
    }

    /// Appends the rows of `other`, which caches as many tokens per row, after this one's.
    pub fn append_rows(&mut self, other: &KvCache) {
        assert_eq!(self.len, other.len, "rows of different lengths");
        let visible =
            |x: &Option<Tensor<4>>| x.clone().map(|x| x.slice(s![.., .., 0..other.len, ..]));
        let theirs: Vec<_> =
            other.layers.iter().map(|l| (visible(&l.keys), visible(&l.values))).collect();
        for (layer, (keys, values)) in self.layers.iter_mut().zip(theirs) {
            let len = self.len;
            let join = |mine: Option<Tensor<4>>, theirs: Option<Tensor<4>>| match (mine, theirs) {
                (Some(a), Some(b)) => {
                    Some(Tensor::cat(vec![a.slice(s![.., .., 0..len, ..]), b], 0))
                }
                _ => None,
            };
            layer.keys = join(layer.keys.take(), keys);
            layer.values = join(layer.values.take(), values);
        }
    }

    /// Replaces every layer's cached keys and values by `f` of them, `len` tokens long; the
    /// buffers grow back to capacity at the next write.
    fn relayout(&mut self, len: usize, f: impl Fn(Tensor<4>) -> Tensor<4>) {
        let cached = self.len;
        let apply = |x: Option<Tensor<4>>| x.map(|x| f(x.slice(s![.., .., 0..cached, ..])));
        for layer in &mut self.layers {
            layer.keys = apply(layer.keys.take());
            layer.values = apply(layer.values.take());
        }
        self.len = len;
    }

    /// Makes the batch rows `rows` of the current batch, in that order: dropping rows lets
    /// finished sequences stop costing work, repeating one fans a shared prompt out.
    pub fn select_rows(&mut self, rows: &Tensor<1, Int>) {
        for layer in &mut self.layers {
            layer.keys = layer.keys.take().map(|k| k.select(0, rows.clone()));
            layer.values = layer.values.take().map(|v| v.select(0, rows.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_in_place_and_grows_past_capacity() {
        let device = Device::default();
        let mut cache = KvCache::new(1, 2);
        let step = |cache: &mut KvCache, value: f32, t: usize| {
            let x = Tensor::<4>::full([1, 1, t, 2], value, &device);
            let (k, _) = cache.slot(0, t).append(x.clone(), x);
            cache.advance(t);
            k.into_data().try_to_vec::<f32>().unwrap()
        };
        assert_eq!(step(&mut cache, 1.0, 1), [1.0, 1.0]);
        assert_eq!(step(&mut cache, 2.0, 1), [1.0, 1.0, 2.0, 2.0]);
        assert_eq!(step(&mut cache, 3.0, 2), [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]);
        assert_eq!(cache.len(), 4);
        // Cut back to two tokens: the next write replaces what followed them.
        cache.truncate(2);
        assert_eq!(step(&mut cache, 4.0, 1), [1.0, 1.0, 2.0, 2.0, 4.0, 4.0]);
        assert_eq!(cache.len(), 3);
    }
}
