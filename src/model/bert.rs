//! BERT (Devlin et al., 2019), the encoder behind small cross-encoders and classifiers such as
//! all-MiniLM-L6-v2, computed as `transformers`' `modeling_bert.py` computes it: word, position
//! and token-type embeddings, post-LayerNorm blocks with bidirectional attention over real
//! tokens, exact GELU, and a tanh pooler over the first (`[CLS]`) token — or, with
//! `classifier_pooling = "mean"` (the key ModernBERT's config uses), the mean of the real tokens'
//! hidden states, which is how sentence encoders such as all-MiniLM-L6-v2 were trained.
//!
//! Dropout is not applied (see `gpt2.rs`). Checkpoint names follow `BertModel`: the fields
//! `self_attention` and `layer_norm` are stored as `self` and `LayerNorm` (see `naming.rs`).

use std::ops::Range;

use anyhow::Result;
use burn::module::Initializer;
use burn::nn::{Embedding, EmbeddingConfig, Linear};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::attention::{attend, merge_heads, split_heads};
use super::layers::{Activation, LayerNorm, freeze_first, linear_tokens, normal_linear};
use super::precision;
use crate::bad_input;

/// The `config.json` fields BERT uses, with `transformers`' `BertConfig` defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    pub initializer_range: f64,
    pub position_embedding_type: String,
    /// What a classifier head reads; not a `BertConfig` field, so `transformers` keeps it as an
    /// attribute and `AutoModelForSequenceClassification` pools `[CLS]` whatever it says.
    pub classifier_pooling: Pooling,
}

/// The sentence vector a classifier head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// tanh(dense(h[CLS])), as `BertForSequenceClassification`.
    #[default]
    Cls,
    /// The mean of the real tokens' final hidden states (sentence-transformers).
    Mean,
}

impl Default for BertConfig {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            initializer_range: 0.02,
            position_embedding_type: "absolute".into(),
            classifier_pooling: Pooling::Cls,
        }
    }
}

impl BertConfig {
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0 || self.hidden_size % self.num_attention_heads != 0 {
            return Err(bad_input!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(bad_input!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        Activation::from_hf_name(&self.hidden_act)?;
        Ok(())
    }

    /// A randomly initialised encoder as `BertPreTrainedModel._init_weights` makes it (lazy).
    pub fn init(&self, device: &Device) -> Result<Bert> {
        self.validate()?;
        let (d, std, eps) = (self.hidden_size, self.initializer_range, self.layer_norm_eps);
        let embedding = |n| {
            EmbeddingConfig::new(n, d)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device)
        };
        let linear = |d_in, d_out| normal_linear(d_in, d_out, true, std, device);
        let activation = Activation::from_hf_name(&self.hidden_act)?;
        let head_dim = d / self.num_attention_heads;
        let layers = (0..self.num_hidden_layers)
            .map(|_| Layer {
                attention: AttentionBlock {
                    self_attention: SelfAttention {
                        query: linear(d, d),
                        key: linear(d, d),
                        value: linear(d, d),
                        n_head: self.num_attention_heads,
                        scale: 1.0 / (head_dim as f64).sqrt(),
                    },
                    output: Output {
                        dense: linear(d, d),
                        layer_norm: LayerNorm::new(d, eps, device),
                    },
                },
                intermediate: Intermediate { dense: linear(d, self.intermediate_size), activation },
                output: Output {
                    dense: linear(self.intermediate_size, d),
                    layer_norm: LayerNorm::new(d, eps, device),
                },
            })
            .collect();
        Ok(Bert {
            embeddings: Embeddings {
                word_embeddings: embedding(self.vocab_size),
                position_embeddings: embedding(self.max_position_embeddings),
                token_type_embeddings: embedding(self.type_vocab_size),
                layer_norm: LayerNorm::new(d, eps, device),
            },
            encoder: Encoder { layer: layers },
            pooler: Pooler { dense: linear(d, d) },
            pooling: self.classifier_pooling,
        })
    }
}

#[derive(Module, Debug)]
pub struct Embeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    n_head: usize,
    scale: f64,
}

impl SelfAttention {
    fn forward(&self, x: Tensor<3>, blocked: &Tensor<4, Bool>) -> Tensor<3> {
        let heads = |linear: &Linear| split_heads(linear_tokens(linear, x.clone()), self.n_head);
        let (q, k, v) = (heads(&self.query), heads(&self.key), heads(&self.value));
        merge_heads(attend(q, k, v, blocked, self.scale)) // [B, T, D]
    }
}

/// dense → add the block's input → LayerNorm (BERT's post-norm residual).
#[derive(Module, Debug)]
pub struct Output {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

impl Output {
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(linear_tokens(&self.dense, x) + residual)
    }
}

#[derive(Module, Debug)]
pub struct AttentionBlock {
    pub self_attention: SelfAttention,
    pub output: Output,
}

#[derive(Module, Debug)]
pub struct Intermediate {
    pub dense: Linear,
    #[module(skip)]
    activation: Activation,
}

#[derive(Module, Debug)]
pub struct Layer {
    pub attention: AttentionBlock,
    pub intermediate: Intermediate,
    pub output: Output,
}

impl Layer {
    fn forward(&self, x: Tensor<3>, blocked: &Tensor<4, Bool>) -> Tensor<3> {
        let attended = self.attention.self_attention.forward(x.clone(), blocked);
        let x = self.attention.output.forward(attended, x);
        let inner = self
            .intermediate
            .activation
            .forward(linear_tokens(&self.intermediate.dense, x.clone()));
        self.output.forward(inner, x)
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub layer: Vec<Layer>,
}

/// tanh(dense(h[CLS])): the sentence vector classifiers read.
#[derive(Module, Debug)]
pub struct Pooler {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct Bert {
    pub embeddings: Embeddings,
    pub encoder: Encoder,
    pub pooler: Pooler,
    #[module(skip)]
    pub pooling: Pooling,
}

impl Bert {
    /// Final hidden states `[B, T, D]` for token ids, token types (0: first segment, 1: second)
    /// and attention mask (1: real token, 0: padding), all `[B, T]`.
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> Tensor<3> {
        let x = self.embed(input_ids, token_type_ids);
        self.layers(x, attention_mask, 0..self.num_layers())
    }

    /// Hidden states `[B, T, D]` after the embeddings and the first `n` layers (see
    /// `Decoder::prefix`).
    pub fn prefix(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
        n: usize,
    ) -> Tensor<3> {
        self.layers(self.embed(input_ids, token_type_ids), attention_mask, 0..n)
    }

    /// Final hidden states from [`prefix`](Self::prefix)'s `x`: the layers from `n` on.
    pub fn rest(&self, x: Tensor<3>, attention_mask: Tensor<2, Int>, n: usize) -> Tensor<3> {
        self.layers(x, attention_mask, n..self.num_layers())
    }

    /// Word, position and token-type embeddings, normalised: `[B, T, D]`.
    fn embed(&self, input_ids: Tensor<2, Int>, token_type_ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = input_ids.dims();
        let device = input_ids.device();
        let positions =
            Tensor::<1, Int>::arange(0..t as i64, &device).reshape([1, t]).expand([b, t]);
        let e = &self.embeddings;
        let x = e.word_embeddings.forward(input_ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(token_type_ids);
        e.layer_norm.forward(x)
    }

    fn layers(
        &self,
        mut x: Tensor<3>,
        attention_mask: Tensor<2, Int>,
        layers: Range<usize>,
    ) -> Tensor<3> {
        let [b, t] = attention_mask.dims();
        // Every query sees every real key, in both directions.
        let blocked = attention_mask.equal_elem(0).reshape([b, 1, 1, t]).expand([b, 1, t, t]);
        for layer in &self.encoder.layer[layers] {
            x = layer.forward(x, &blocked);
        }
        x
    }

    /// The sentence vector `[B, D]` from hidden states `[B, T, D]` and the attention mask
    /// `[B, T]`.
    pub fn pool(&self, hidden: Tensor<3>, attention_mask: Tensor<2, Int>) -> Tensor<2> {
        let [b, t, d] = hidden.dims();
        match self.pooling {
            Pooling::Cls => {
                let first = hidden.slice(s![.., 0..1, ..]).reshape([b, d]);
                precision::linear(&self.pooler.dense, first).tanh()
            }
            Pooling::Mean => {
                let real = attention_mask.float().reshape([b, t, 1]);
                let count = real.clone().sum_dim(1).reshape([b, 1]);
                (hidden * real).sum_dim(1).reshape([b, d]) / count
            }
        }
    }

    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embeddings.weight.dims()[0]
    }

    pub fn num_layers(&self) -> usize {
        self.encoder.layer.len()
    }

    /// Trains only the top `n` layers and the pooler: the embeddings and the layers below stop
    /// requiring gradients, so backward stops where the trained layers begin. `n` of 0 or at
    /// least the depth trains everything.
    pub fn train_top_layers(mut self, n: usize) -> Self {
        let depth = self.num_layers();
        if n == 0 || n >= depth {
            return self;
        }
        self.embeddings = self.embeddings.no_grad();
        self.encoder.layer = freeze_first(self.encoder.layer, depth - n);
        self
    }
}
