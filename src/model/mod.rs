//! Transformer families, their heads, and Hugging Face checkpoint I/O.

pub mod adapter;
pub mod attention;
pub mod auto;
pub mod bert;
pub mod config;
pub mod decode_layout;
pub mod decoder;
pub mod fused;
pub mod gpt2;
pub mod heads;
pub mod kv_cache;
pub mod layers;
pub mod llama;
pub mod llama_step;
pub mod lora;
pub mod loss;
pub mod mask;
pub mod naming;
pub mod plain_ops;
pub mod precision;
pub mod prefix_cache;
pub mod preset;
pub mod pretrained;
pub mod reinit;
pub mod reward;
pub mod rope;
pub mod shared_prefix;
pub mod weights;

pub use auto::{ModelDir, load_causal_lm, load_scalar_model};
pub use config::{Arch, HeadKind, ModelConfig};
pub use decoder::Decoder;
pub use heads::{CausalLm, ScalarModel};
pub use mask::PaddedBatch;
pub use pretrained::{Pretrained, save_causal_lm, save_scalar_model};
