//! One forward step of a Llama-family decoder over new tokens after cached ones — a decoding
//! step (one token a row) or a prompt — every block in a single call into LibTorch
//! (src/model/llama_step.cpp). Run op by op from Rust, a step at batch 1 is some 70 LibTorch
//! operations a block, each crossing Burn, tch and the dispatcher, and on SmolLM2 those
//! crossings cost as much as a third of the step (docs/performance.md, "Decoding one token at
//! a time"). The C++ side runs the same computation as `llama.rs` with q/k/v and gate/up
//! stacked into one product each, a product loop of its own for a few rows, attention with a
//! loop of its own, and the LM head on each row's last token only. f32 activations on the
//! CPU, outside autodiff; weights in f32, or int8 for `--precision int8` (the LM head's too,
//! as llama.cpp's q8_0 has it). Anything else decodes through `llama.rs`.
#![allow(deprecated)] // Burn 0.22 marks the LibTorch backend deprecated; it is the one we run on.

use burn::backend::LibTorch;
use burn::backend::libtorch::TchTensor;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;

use super::attention::with_sliding_window;
use super::fused::check;
use super::kv_cache::KvCache;
use super::layers::Activation;
use super::mask::PaddedBatch;
use super::rope::RopeTables;
use super::{CausalLm, Decoder};

unsafe extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn rlhf_llama_step(
        x: *const torch_sys::C_tensor,
        weights: *const *const torch_sys::C_tensor,
        n_blocks: i64,
        keys: *const *mut torch_sys::C_tensor,
        values: *const *mut torch_sys::C_tensor,
        at: i64,
        tokens: i64,
        cos: *const torch_sys::C_tensor,
        sin: *const torch_sys::C_tensor,
        allowed: *const torch_sys::C_tensor,
        n_head: i64,
        n_kv_head: i64,
        eps: f64,
        scale: f64,
        out: *mut *mut torch_sys::C_tensor,
    ) -> *mut std::ffi::c_char;
}

/// A Llama-family decoder's weights laid out for the one-call step: each product's weight in
/// `nn.Linear`'s `[out, in]`, rows contiguous (the order the products stream them in), q/k/v
/// and gate/up stacked, in f32 or int8. A copy of the products' weights; norms, embeddings and a
/// tied f32 LM head are shared.
pub struct LlamaStep {
    embed_tokens: Embedding,
    /// Per block: input norm, qkv, o, post-attention norm, gate_up, down, each product as its
    /// weight, scales and bias (the order llama_step.cpp reads, absent ones `None`); then the
    /// final norm and the LM head's weight and scales.
    weights: Vec<Option<tch::Tensor>>,
    n_blocks: usize,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    eps: f64,
    inverse_frequencies: Vec<f32>,
    sliding_window: Option<usize>,
    int8: bool,
}

impl LlamaStep {
    /// The step for `model`, when one can run it: a Llama-family body with SiLU and f32
    /// weights on the CPU, outside autodiff. `int8` stores every product's weight (the LM
    /// head's too) as int8 with one scale per output row.
    pub fn new(model: &CausalLm, int8: bool) -> Option<Self> {
        if !Self::supports(model) {
            return None;
        }
        let Decoder::Llama(llama) = &model.body else { return None };
        let first = llama.layers.first()?;
        let embedding = plain(llama.token_embedding())?;
        let product = |w: tch::Tensor, bias: Option<tch::Tensor>| {
            let (w, scales) = if int8 { quantized(&w) } else { (w.contiguous(), None) };
            [Some(w), scales, bias]
        };
        let norm = |n: &RmsNorm| plain(n.gamma.val());
        let mut weights = Vec::new();
        for layer in &llama.layers {
            let (attn, mlp) = (&layer.self_attn, &layer.mlp);
            let (qkv, gate_up) =
                ([&attn.q_proj, &attn.k_proj, &attn.v_proj], [&mlp.gate_proj, &mlp.up_proj]);
            weights.push(Some(norm(&layer.input_layernorm)?));
            weights.extend(product(stacked(&qkv, weight)?, stacked_bias(&qkv)?));
            weights.extend(product(weight(&attn.o_proj)?, bias(&attn.o_proj)?));
            weights.push(Some(norm(&layer.post_attention_layernorm)?));
            weights.extend(product(stacked(&gate_up, weight)?, stacked_bias(&gate_up)?));
            weights.extend(product(weight(&mlp.down_proj)?, bias(&mlp.down_proj)?));
        }
        weights.push(Some(norm(&llama.norm)?));
        let head = match &model.lm_head {
            Some(head) => weight(head)?,
            None => embedding, // tied: the embedding [V, D] is the head's [out, in]
        };
        let [head, scales, _] = product(head, None);
        weights.extend([head, scales]);
        Some(Self {
            embed_tokens: llama.embed_tokens.clone(),
            weights,
            n_blocks: llama.layers.len(),
            n_head: first.self_attn.n_head,
            n_kv_head: first.self_attn.n_kv_head,
            head_dim: 2 * llama.inverse_frequencies.len(),
            eps: first.input_layernorm.epsilon,
            inverse_frequencies: llama.inverse_frequencies.clone(),
            sliding_window: llama.sliding_window,
            int8,
        })
    }

    /// Whether the products' weights are int8 (`--precision int8`).
    pub fn is_int8(&self) -> bool {
        self.int8
    }

    /// Whether [`Self::new`] makes a step for `model` (without making it).
    pub fn supports(model: &CausalLm) -> bool {
        let Decoder::Llama(llama) = &model.body else { return false };
        let silu = llama.layers.iter().all(|l| l.mlp.activation == Activation::Silu);
        silu && !llama.layers.is_empty() && plain(llama.token_embedding()).is_some()
    }

    /// The next token's logits `[B, V]` after `ids` `[B, T]`, new tokens that follow the
    /// cached ones, as `CausalLm` computes them; the cache takes their keys and values.
    pub fn forward(
        &self,
        ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        cache: &mut KvCache,
    ) -> Tensor<2> {
        let [b, t] = ids.dims();
        let at = cache.len();
        let buffers = cache.take_buffers(t, [b, self.n_kv_head, self.head_dim], &ids.device());
        let x = self.embed_tokens.forward(ids); // [B, T, D]
        let x = plain(x.clone().reshape([b * t, x.dims()[2]])).expect("f32 on the CPU");
        let [cos, sin] = RopeTables::new(&self.inverse_frequencies, batch.positions.clone())
            .tables()
            .map(|t| plain(t.reshape([-1, self.head_dim as i32])).expect("f32 on the CPU"));
        let blocked = match self.sliding_window {
            Some(window) => with_sliding_window(&batch.blocked, window),
            None => batch.blocked.clone(),
        };
        assert_eq!(blocked.dims()[3], at + t, "the mask covers the cached keys and the new ones");
        let allowed = blocked.bool_not().try_into_primitive::<LibTorch>().expect("LibTorch").tensor;
        // Written in place: a buffer another cache still shares (a copied conversation) is
        // copied first, so the other never sees the write.
        let mut buffers: Vec<[tch::Tensor; 2]> =
            buffers.into_iter().map(|kv| kv.map(owned)).collect();
        let keys: Vec<_> = buffers.iter_mut().map(|[k, _]| k.as_mut_ptr()).collect();
        let values: Vec<_> = buffers.iter_mut().map(|[_, v]| v.as_mut_ptr()).collect();
        let weights: Vec<_> = self
            .weights
            .iter()
            .map(|w| w.as_ref().map_or(std::ptr::null(), |w| w.as_ptr()))
            .collect();
        let mut out = std::ptr::null_mut();
        // SAFETY: every pointer is a live tensor for the call (null marks an absent bias); the
        // cache buffers are owned here alone, so the in-place writes are seen by no one else.
        let logits = unsafe {
            check(rlhf_llama_step(
                x.as_ptr(),
                weights.as_ptr(),
                self.n_blocks as i64,
                keys.as_ptr(),
                values.as_ptr(),
                at as i64,
                t as i64,
                cos.as_ptr(),
                sin.as_ptr(),
                allowed.as_ptr(),
                self.n_head as i64,
                self.n_kv_head as i64,
                self.eps,
                (self.head_dim as f64).powf(-0.5),
                &mut out,
            ));
            tch::Tensor::from_ptr(out)
        };
        let burn = |t: tch::Tensor| Tensor::<4>::from_primitive::<LibTorch>(TchTensor::new(t));
        cache.put_buffers(buffers.into_iter().map(|kv| kv.map(burn)).collect());
        cache.advance(t);
        Tensor::<2>::from_primitive::<LibTorch>(TchTensor::new(logits))
    }
}

/// The LibTorch tensor of a plain f32 CPU tensor (shared, not copied).
fn plain<const D: usize>(x: Tensor<D>) -> Option<tch::Tensor> {
    let t = x.try_into_primitive::<LibTorch>().ok()?.tensor;
    (t.kind() == tch::Kind::Float && t.device() == tch::Device::Cpu).then_some(t)
}

/// A cache buffer this step may write: its own, or a copy when its storage is shared.
fn owned(x: Tensor<4>) -> tch::Tensor {
    let t = x.try_into_primitive::<LibTorch>().expect("the cache lives on LibTorch");
    if t.can_mut() { t.tensor } else { t.tensor.copy() }
}

/// `w` `[out, in]` as int8 with one f32 scale per output row, max |w| / 127 (symmetric).
fn quantized(w: &tch::Tensor) -> (tch::Tensor, Option<tch::Tensor>) {
    let scales = (w.abs().amax([1i64].as_slice(), true) / 127.0).clamp_min(1e-30);
    let q = (w / &scales).round().clamp(-127.0, 127.0).to_kind(tch::Kind::Int8);
    (q.contiguous(), Some(scales.reshape([-1])))
}

/// A `Linear`'s weight as `[out, in]` (a view of Burn's `[in, out]`).
fn weight(linear: &Linear) -> Option<tch::Tensor> {
    Some(plain(linear.weight.val())?.tr())
}

fn bias(linear: &Linear) -> Option<Option<tch::Tensor>> {
    match &linear.bias {
        Some(b) => Some(Some(plain(b.val())?)),
        None => Some(None),
    }
}

/// Several products of the same input as one: their weights `[out, in]` stacked along `out`.
fn stacked(linears: &[&Linear], part: fn(&Linear) -> Option<tch::Tensor>) -> Option<tch::Tensor> {
    let parts: Option<Vec<_>> = linears.iter().map(|l| part(l)).collect();
    Some(tch::Tensor::cat(&parts?, 0))
}

/// The stacked products' biases: all present, stacked, or none.
fn stacked_bias(linears: &[&Linear]) -> Option<Option<tch::Tensor>> {
    match linears.iter().filter(|l| l.bias.is_some()).count() {
        0 => Some(None),
        n if n == linears.len() => Some(Some(stacked(linears, |l| plain(l.bias.as_ref()?.val()))?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::{Flavor, LlamaConfig};

    fn model(config: LlamaConfig, tied: bool, device: &Device) -> CausalLm {
        let lm_head = (!tied).then(|| {
            crate::model::layers::normal_linear(
                config.hidden_size,
                config.vocab_size,
                false,
                0.3,
                device,
            )
        });
        CausalLm { body: Decoder::Llama(config.init(device).unwrap()), lm_head }
    }

    fn ids(rows: &[i64], device: &Device) -> Tensor<2, Int> {
        Tensor::from_data(TensorData::new(rows.to_vec(), [rows.len(), 1]), device)
    }

    fn max_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        (a - b).abs().max().into_scalar()
    }

    /// Left-padded prompts prefilled through `llama.rs` and through the step, then steps
    /// both ways, each from its own prefill: the step's logits are the model's, for one row,
    /// two, and five (the products take rows four at a time). The step's cache is shared with
    /// a third cache that writes another token at the same position, which the step must not
    /// see.
    fn check(model: &CausalLm, device: &Device) {
        for rows in [1, 2, 5] {
            check_rows(model, rows, device);
        }
    }

    fn check_rows(model: &CausalLm, rows: usize, device: &Device) {
        let step = LlamaStep::new(model, false).expect("a Llama with SiLU on the CPU has a step");
        let first = |table: &[[i64; 5]]| {
            let flat: Vec<i64> = table[..rows].iter().flatten().copied().collect();
            Tensor::<2, Int>::from_data(TensorData::new(flat, [rows, table[0].len()]), device)
        };
        let mask = [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 0, 1, 1], [1; 5]];
        let prompt =
            [[0, 0, 5, 9, 2], [7, 3, 3, 1, 8], [0, 4, 4, 2, 6], [0, 0, 0, 3, 9], [1, 2, 3, 4, 5]];
        let (mask, prompt) = (first(&mask), first(&prompt));
        let mut reference = KvCache::new(model.body.num_layers(), 6); // grows past 6
        let prefill = PaddedBatch::new(mask.clone());
        let hidden = model.hidden(prompt.clone(), &prefill, Some(&mut reference));
        let expected = model.logits(hidden).slice(s![.., 4..5, ..]).squeeze_dim(1);
        let mut ours = KvCache::new(model.body.num_layers(), 6);
        let diff = max_diff(step.forward(prompt, &prefill, &mut ours), expected);
        assert!(diff < 1e-4, "{rows} rows, prefill: logits differ by {diff}");
        let mut other = ours.clone(); // shares ours's buffers
        let mut positions = mask.clone().sum_dim(1);
        let mut key_mask = mask;
        let steps = [[4, 6, 10, 12, 3], [11, 2, 5, 7, 9], [1; 5]];
        for (i, tokens) in steps.iter().enumerate() {
            let tokens = &tokens[..rows];
            key_mask = Tensor::cat(vec![key_mask, Tensor::ones([rows, 1], device)], 1);
            let batch = PaddedBatch::with_keys(key_mask.clone(), positions.clone());
            let hidden = model.hidden(ids(tokens, device), &batch, Some(&mut reference));
            let expected = model.logits(hidden).squeeze_dim(1);
            let logits = step.forward(ids(tokens, device), &batch, &mut ours);
            let diff = max_diff(logits, expected);
            assert!(diff < 1e-4, "{rows} rows, step {i}: logits differ by {diff}");
            if i == 0 {
                model.hidden(ids(&vec![13; rows], device), &batch, Some(&mut other));
            }
            positions = positions + 1;
        }
    }

    fn llama(flavor: Flavor) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 48,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            max_position_embeddings: 32,
            initializer_range: 0.3,
            flavor,
            ..Default::default()
        }
    }

    #[test]
    fn step_computes_what_the_model_computes() {
        let device = Device::default();
        check(&model(llama(Flavor::Llama), true, &device), &device);
        // Biases on q/k/v and an untied head.
        check(&model(llama(Flavor::Qwen2), false, &device), &device);
        // A window shorter than the rows: the oldest keys drop out.
        let mistral = LlamaConfig { sliding_window: Some(3), ..llama(Flavor::Mistral) };
        check(&model(mistral, true, &device), &device);
        // Widths that leave a remainder after every vector width of the products' loops.
        let odd = LlamaConfig { hidden_size: 40, intermediate_size: 72, ..llama(Flavor::Llama) };
        check(&model(odd, false, &device), &device);
    }

    /// int8 weights move the logits by a few percent of their spread on this random model
    /// (about 3 %); SmolLM2's greedy text is compared in docs/performance.md.
    #[test]
    fn int8_step_stays_near_f32() {
        let device = Device::default();
        let model = model(llama(Flavor::Llama), true, &device);
        let (f32_step, int8_step) =
            (LlamaStep::new(&model, false).unwrap(), LlamaStep::new(&model, true).unwrap());
        let mask = Tensor::<2, Int>::ones([2, 4], &device);
        let prompt = Tensor::<2, Int>::from_ints([[5, 9, 2, 4], [7, 3, 1, 8]], &device);
        let mut cache = KvCache::new(model.body.num_layers(), 8);
        model.hidden(prompt, &PaddedBatch::new(mask.clone()), Some(&mut cache));
        let mut copy = cache.clone();
        let key_mask = Tensor::cat(vec![mask, Tensor::ones([2, 1], &device)], 1);
        let batch =
            PaddedBatch::with_keys(key_mask, Tensor::<2, Int>::from_ints([[4], [4]], &device));
        let exact = f32_step.forward(ids(&[6, 6], &device), &batch, &mut cache);
        let approx = int8_step.forward(ids(&[6, 6], &device), &batch, &mut copy);
        let spread: f32 = (exact.clone().max() - exact.clone().min()).into_scalar();
        let diff = max_diff(approx, exact);
        assert!(diff < 0.06 * spread, "int8 logits differ by {diff} (spread {spread})");
    }

    #[test]
    fn only_silu_llamas_on_plain_f32_have_a_step() {
        let device = Device::default();
        let silu = model(llama(Flavor::Llama), true, &device);
        assert!(LlamaStep::supports(&silu) && LlamaStep::new(&silu, false).is_some());
        let gelu = LlamaConfig { hidden_act: "gelu".into(), ..llama(Flavor::Llama) };
        let gelu = model(gelu, true, &device);
        assert!(!LlamaStep::supports(&gelu) && LlamaStep::new(&gelu, false).is_none());
        let autodiff = model(llama(Flavor::Llama), true, &Device::default().autodiff());
        assert!(!LlamaStep::supports(&autodiff) && LlamaStep::new(&autodiff, false).is_none());
    }
}
