//! GGUF, the single-file model format of llama.cpp, ollama and LM Studio: `rlhf model import`
//! turns one into a Hugging Face directory every stage reads, `rlhf model export` writes one
//! from a trained Llama- or GPT-2-family checkpoint.
//!
//! The container (file.rs) and the block formats (quant.rs reads them, quantize.rs writes them)
//! are small and table-driven, read from the spec, `gguf-py` and ggml; mix.rs picks each
//! tensor's type, names.rs maps tensor names, tokenizer.rs the vocabulary.

mod export;
pub mod file;
mod import;
pub mod mix;
pub mod names;
pub mod quant;
mod quantize;
pub mod tokenizer;

pub use export::export;
pub use import::{Imported, import};
pub use mix::ExportType;
