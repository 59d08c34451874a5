//! GPT-2 (Radford et al., 2019, "Language Models are Unsupervised Multitask Learners"), computed
//! as `transformers`' `modeling_gpt2.py` computes it: learned positions, pre-LayerNorm blocks,
//! GELU (tanh form by default), and Conv1D weights stored `[in, out]` — the layout of Burn's
//! `Linear`, so GPT-2 checkpoints load without a transpose.
//!
//! Dropout is not applied: RLHF trainers switch it off because it breaks the log-probability
//! ratios PPO relies on, and fine-tuning runs here use the same forward pass everywhere.

use std::ops::Range;

use anyhow::Result;
use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::attention::{attend, attend_packed, heads_from, merge_heads, unpack};
use super::kv_cache::{KvCache, LayerSlot};
use super::layers::{
    Activation, LayerNorm, freeze_first, linear_tokens, normal_linear, positions_from,
};
use super::mask::{PaddedBatch, queries_from};
use crate::bad_input;

/// The `config.json` fields GPT-2 uses, with `transformers`' `GPT2Config` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// Context window (learned position embeddings).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// MLP width; `null` means 4 × `n_embd`.
    pub n_inner: Option<usize>,
    pub activation_function: String,
    pub layer_norm_epsilon: f64,
    pub scale_attn_weights: bool,
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Std of the normal initialiser for weights made from scratch.
    pub initializer_range: f64,
}

impl Default for Gpt2Config {
    fn default() -> Self {
        Self {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd: 768,
            n_layer: 12,
            n_head: 12,
            n_inner: None,
            activation_function: "gelu_new".into(),
            layer_norm_epsilon: 1e-5,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            initializer_range: 0.02,
        }
    }
}

impl Gpt2Config {
    /// Checks the shapes make sense before any tensor is made.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ] {
            if value == 0 {
                return Err(bad_input!("gpt2 config: `{name}` must be at least 1"));
            }
        }
        if self.n_embd % self.n_head != 0 {
            return Err(bad_input!(
                "gpt2 config: n_embd ({}) must be divisible by n_head ({})",
                self.n_embd,
                self.n_head
            ));
        }
        Activation::from_hf_name(&self.activation_function)?;
        Ok(())
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// A randomly initialised GPT-2 as `GPT2PreTrainedModel._init_weights` makes it: N(0, 0.02)
    /// weights, zero biases, and residual projections scaled by 1/√(2·n_layer). Parameters are
    /// lazy, so loading a checkpoint over them costs no random draws.
    pub fn init(&self, device: &Device) -> Result<Gpt2> {
        self.validate()?;
        let std = self.initializer_range;
        let proj_std = std / (2.0 * self.n_layer as f64).sqrt();
        let activation = Activation::from_hf_name(&self.activation_function)?;
        let d = self.n_embd;
        let embedding = |n| {
            EmbeddingConfig::new(n, d)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device)
        };
        let layer_norm = || LayerNorm::new(d, self.layer_norm_epsilon, device);
        let head_dim = d / self.n_head;
        let h = (0..self.n_layer)
            .map(|layer| {
                let mut scale =
                    if self.scale_attn_weights { (head_dim as f64).powf(-0.5) } else { 1.0 };
                if self.scale_attn_by_inverse_layer_idx {
                    scale /= (layer + 1) as f64;
                }
                Block {
                    ln_1: layer_norm(),
                    attn: Attention {
                        c_attn: normal_linear(d, 3 * d, true, std, device),
                        c_proj: normal_linear(d, d, true, proj_std, device),
                        n_head: self.n_head,
                        scale,
                    },
                    ln_2: layer_norm(),
                    mlp: Mlp {
                        c_fc: normal_linear(d, self.inner_dim(), true, std, device),
                        c_proj: normal_linear(self.inner_dim(), d, true, proj_std, device),
                        activation,
                    },
                }
            })
            .collect();
        Ok(Gpt2 {
            wte: embedding(self.vocab_size),
            wpe: embedding(self.n_positions),
            h,
            ln_f: layer_norm(),
            n_positions: self.n_positions,
        })
    }
}

/// Causal self-attention with a fused q/k/v projection (`c_attn`: D → 3D).
#[derive(Module, Debug)]
pub struct Attention {
    pub c_attn: Linear,
    pub c_proj: Linear,
    n_head: usize,
    scale: f64,
}

impl Attention {
    /// The output at the queries `from..T` (0: every query), each reading every key.
    pub fn forward(
        &self,
        x: Tensor<3>,
        batch: &PaddedBatch,
        cache: Option<LayerSlot>,
        from: usize,
    ) -> Tensor<3> {
        let qkv = linear_tokens(&self.c_attn, x); // [B, T, 3D]
        let blocked = queries_from(&batch.blocked, from);
        let y = match cache {
            None => attend_packed(qkv, self.n_head, &blocked, self.scale, from),
            Some(slot) => {
                let [q, k, v] = unpack(qkv, self.n_head); // [B, H, T, hd]
                let (k, v) = slot.append(k, v); // [B, H, S, hd]
                attend(heads_from(q, from), k, v, &blocked, self.scale)
            }
        };
        linear_tokens(&self.c_proj, merge_heads(y)) // [B, T - from, D]
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    #[module(skip)]
    activation: Activation,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.activation.forward(linear_tokens(&self.c_fc, x)); // [B, T, 4D]
        linear_tokens(&self.c_proj, x)
    }
}

/// x + attn(ln_1(x)), then x + mlp(ln_2(x)).
#[derive(Module, Debug)]
pub struct Block {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    /// The block's output at positions `from..T` (0: all of them).
    pub fn forward(
        &self,
        x: Tensor<3>,
        batch: &PaddedBatch,
        cache: Option<LayerSlot>,
        from: usize,
    ) -> Tensor<3> {
        let attn = self.attn.forward(self.ln_1.forward(x.clone()), batch, cache, from);
        let x = positions_from(x, from) + attn;
        x.clone() + self.mlp.forward(self.ln_2.forward(x))
    }
}

/// The GPT-2 body (`GPT2Model`, saved under `transformer.`): token and position embeddings,
/// `n_layer` blocks, final LayerNorm. Heads live in `heads.rs`.
#[derive(Module, Debug)]
pub struct Gpt2 {
    pub wte: Embedding,
    pub wpe: Embedding,
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
    n_positions: usize,
}

impl Gpt2 {
    /// Hidden states `[B, T, D]` for token ids `[B, T]`; with a cache, the T tokens follow the
    /// cached ones and each layer adds its keys and values (`Decoder::forward` advances it).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let x = self.embed(input_ids, batch);
        self.ln_f.forward(self.blocks(x, batch, 0..self.h.len(), cache, 0))
    }

    /// Token plus position embeddings `[B, T, D]`.
    pub fn embed(&self, input_ids: Tensor<2, Int>, batch: &PaddedBatch) -> Tensor<3> {
        self.wte.forward(input_ids) + self.wpe.forward(batch.positions.clone())
    }

    /// Runs the blocks `layers` over hidden states `x` `[B, T, D]` (no final norm); the last of
    /// them hands back the positions `from..T` only (0: all of them).
    pub fn blocks(
        &self,
        mut x: Tensor<3>,
        batch: &PaddedBatch,
        layers: Range<usize>,
        mut cache: Option<&mut KvCache>,
        from: usize,
    ) -> Tensor<3> {
        let t = x.dims()[1];
        let last = layers.end.saturating_sub(1);
        for i in layers {
            let slot = cache.as_deref_mut().map(|c| c.slot(i, t));
            x = self.h[i].forward(x, batch, slot, if i == last { from } else { 0 });
        }
        x
    }

    pub fn num_layers(&self) -> usize {
        self.h.len()
    }

    /// The embeddings and the blocks before `first_trained` stop requiring gradients.
    pub fn freeze_below(mut self, first_trained: usize) -> Self {
        self.wte = self.wte.no_grad();
        self.wpe = self.wpe.no_grad();
        self.h = freeze_first(self.h, first_trained);
        self
    }

    /// The token embedding matrix `[V, D]`, which GPT-2's LM head reuses (tied weights).
    pub fn token_embedding(&self) -> Tensor<2> {
        self.wte.weight.val()
    }

    /// Longest sequence the position table covers.
    pub fn max_positions(&self) -> usize {
        self.n_positions
    }
}
