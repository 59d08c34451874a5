//! The Llama family (Touvron et al., 2023, "LLaMA"), as `transformers`' `modeling_llama.py`
//! computes it, and its close relatives by `model_type`: `mistral` (sliding-window attention)
//! and `qwen2` (biases on q/k/v). SmolLM and TinyLlama are `llama` configs.
//!
//! Pre-norm blocks with RMSNorm, rotary positions (rope.rs), grouped-query attention
//! (`num_key_value_heads` < `num_attention_heads`), and a SwiGLU MLP:
//! down(act(gate(x)) · up(x)). Weights are `nn.Linear` (`[out, in]` on disk).

use std::ops::Range;

use anyhow::Result;
use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig, Linear, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::attention::{attend, merge_heads, split_heads, with_sliding_window};
use super::kv_cache::{KvCache, LayerSlot, with_cached};
use super::layers::{Activation, freeze_first, linear_tokens, normal_linear, positions_from};
use super::mask::{PaddedBatch, queries_from};
use super::rope::{RopeConfig, RopeTables};
use crate::bad_input;

/// Which member of the family, from `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    #[default]
    Llama,
    Mistral,
    Qwen2,
}

impl Flavor {
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Some(match model_type {
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            _ => return None,
        })
    }

    pub fn model_type(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "mistral",
            Self::Qwen2 => "qwen2",
        }
    }

    /// The class-name stem `transformers` uses (`LlamaForCausalLM`, `Qwen2ForCausalLM`, …).
    pub fn class_stem(self) -> &'static str {
        match self {
            Self::Llama => "Llama",
            Self::Mistral => "Mistral",
            Self::Qwen2 => "Qwen2",
        }
    }
}

/// The `config.json` fields the family uses, with `transformers`' `LlamaConfig` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Fewer than `num_attention_heads` means grouped-query attention; `null` means equal.
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; `null` means hidden_size / num_attention_heads.
    pub head_dim: Option<usize>,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    /// 4.x form of the rotary settings (5.x: `rope_parameters`); see rope.rs.
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    /// Biases on q/k/v/o (Llama); Qwen2 always has them on q/k/v.
    pub attention_bias: bool,
    pub mlp_bias: bool,
    /// Mistral's attention window.
    pub sliding_window: Option<usize>,
    /// Qwen2's per-layer sliding windows (not supported).
    pub use_sliding_window: bool,
    pub initializer_range: f64,
    #[serde(skip)]
    pub flavor: Flavor,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        Self {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: "silu".into(),
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            attention_bias: false,
            mlp_bias: false,
            sliding_window: None,
            use_sliding_window: false,
            initializer_range: 0.02,
            flavor: Flavor::Llama,
        }
    }
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    pub fn rope(&self) -> Result<RopeConfig> {
        let mut json = Map::new();
        for (key, value) in [
            ("rope_theta", self.rope_theta.map(Value::from)),
            ("rope_scaling", self.rope_scaling.clone()),
            ("rope_parameters", self.rope_parameters.clone()),
        ] {
            if let Some(v) = value {
                json.insert(key.into(), v);
            }
        }
        let default_theta = if self.flavor == Flavor::Llama { 10000.0 } else { 1e6 };
        RopeConfig::from_hf(&json, default_theta)
    }

    /// Checks the shapes make sense before any tensor is made.
    pub fn validate(&self) -> Result<()> {
        let name = self.flavor.model_type();
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(bad_input!("{name} config: `{key}` must be at least 1"));
            }
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            return Err(bad_input!(
                "{name} config: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim.is_none() && self.hidden_size % self.num_attention_heads != 0 {
            return Err(bad_input!(
                "{name} config: hidden_size ({}) must be divisible by num_attention_heads ({}) unless head_dim is set",
                self.hidden_size,
                self.num_attention_heads
            ));
        }
        if self.head_dim() % 2 != 0 {
            return Err(bad_input!(
                "{name} config: head_dim ({}) must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if self.use_sliding_window {
            return Err(bad_input!("{name} config: use_sliding_window = true is not supported"));
        }
        Activation::from_hf_name(&self.hidden_act)?;
        self.rope()?;
        Ok(())
    }

    /// A randomly initialised model as `LlamaPreTrainedModel._init_weights` makes it:
    /// N(0, initializer_range) weights, zero biases, unit norms. Parameters are lazy.
    pub fn init(&self, device: &Device) -> Result<Llama> {
        self.validate()?;
        let std = self.initializer_range;
        let (d, hd, heads, kv) =
            (self.hidden_size, self.head_dim(), self.num_attention_heads, self.kv_heads());
        let qkv_bias = self.attention_bias || self.flavor == Flavor::Qwen2;
        let activation = Activation::from_hf_name(&self.hidden_act)?;
        let norm = || RmsNormConfig::new(d).with_epsilon(self.rms_norm_eps).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| DecoderLayer {
                input_layernorm: norm(),
                self_attn: Attention {
                    q_proj: normal_linear(d, heads * hd, qkv_bias, std, device),
                    k_proj: normal_linear(d, kv * hd, qkv_bias, std, device),
                    v_proj: normal_linear(d, kv * hd, qkv_bias, std, device),
                    o_proj: normal_linear(heads * hd, d, self.attention_bias, std, device),
                    n_head: heads,
                    n_kv_head: kv,
                },
                post_attention_layernorm: norm(),
                mlp: Mlp {
                    gate_proj: normal_linear(d, self.intermediate_size, self.mlp_bias, std, device),
                    up_proj: normal_linear(d, self.intermediate_size, self.mlp_bias, std, device),
                    down_proj: normal_linear(self.intermediate_size, d, self.mlp_bias, std, device),
                    activation,
                },
            })
            .collect();
        Ok(Llama {
            embed_tokens: EmbeddingConfig::new(self.vocab_size, d)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            layers,
            norm: norm(),
            inverse_frequencies: self.rope()?.inverse_frequencies(hd),
            sliding_window: if self.flavor == Flavor::Mistral { self.sliding_window } else { None },
            max_positions: self.max_position_embeddings,
        })
    }
}

/// Grouped-query self-attention with rotary positions.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub(super) n_head: usize,
    pub(super) n_kv_head: usize,
}

impl Attention {
    /// The output at the queries `from..T` (0: every query), each reading every key.
    pub fn forward(
        &self,
        x: Tensor<3>,
        blocked: &Tensor<4, Bool>,
        rope: &RopeTables,
        cache: Option<LayerSlot>,
        from: usize,
    ) -> Tensor<3> {
        let q = linear_tokens(&self.q_proj, positions_from(x.clone(), from));
        let q = split_heads(q, self.n_head); // [B, H, T - from, hd]
        let k = split_heads(linear_tokens(&self.k_proj, x.clone()), self.n_kv_head); // [B, KV, T, hd]
        let v = split_heads(linear_tokens(&self.v_proj, x), self.n_kv_head);
        let (q, k) = (rope.from_position(from).apply(q), rope.apply(k));
        let (k, v) = with_cached(cache, k, v); // [B, KV, S, hd]
        let head_dim = q.dims()[3];
        let y = attend(q, k, v, &queries_from(blocked, from), (head_dim as f64).powf(-0.5));
        linear_tokens(&self.o_proj, merge_heads(y)) // [B, T - from, D]
    }
}

/// SwiGLU: down(act(gate(x)) · up(x)).
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    #[module(skip)]
    pub(super) activation: Activation,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.activation.forward(linear_tokens(&self.gate_proj, x.clone()));
        linear_tokens(&self.down_proj, gate * linear_tokens(&self.up_proj, x))
    }
}

/// x + attn(norm(x)), then x + mlp(norm(x)).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// The layer's output at positions `from..T` (0: all of them).
    pub fn forward(
        &self,
        x: Tensor<3>,
        blocked: &Tensor<4, Bool>,
        rope: &RopeTables,
        cache: Option<LayerSlot>,
        from: usize,
    ) -> Tensor<3> {
        let normed = self.input_layernorm.forward(x.clone());
        let x =
            positions_from(x, from) + self.self_attn.forward(normed, blocked, rope, cache, from);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// The Llama body (`LlamaModel`, saved under `model.`). Heads live in `heads.rs`.
#[derive(Module, Debug)]
pub struct Llama {
    pub embed_tokens: Embedding,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    #[module(skip)]
    pub(super) inverse_frequencies: Vec<f32>,
    #[module(skip)]
    pub(super) sliding_window: Option<usize>,
    max_positions: usize,
}

impl Llama {
    /// Hidden states `[B, T, D]` for token ids `[B, T]`; with a cache, the T tokens follow the
    /// cached ones and each layer adds its keys and values (`Decoder::forward` advances it).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        batch: &PaddedBatch,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let x = self.embed_tokens.forward(input_ids);
        self.norm.forward(self.blocks(x, batch, 0..self.layers.len(), cache, 0))
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
        let rope = RopeTables::new(&self.inverse_frequencies, batch.positions.clone());
        let blocked = match self.sliding_window {
            Some(window) => with_sliding_window(&batch.blocked, window),
            None => batch.blocked.clone(),
        };
        let last = layers.end.saturating_sub(1);
        for i in layers {
            let slot = cache.as_deref_mut().map(|c| c.slot(i, t));
            let from = if i == last { from } else { 0 };
            x = self.layers[i].forward(x, &blocked, &rope, slot, from);
        }
        x
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The embeddings and the blocks before `first_trained` stop requiring gradients.
    pub fn freeze_below(mut self, first_trained: usize) -> Self {
        self.embed_tokens = self.embed_tokens.no_grad();
        self.layers = freeze_first(self.layers, first_trained);
        self
    }

    pub fn token_embedding(&self) -> Tensor<2> {
        self.embed_tokens.weight.val()
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}
