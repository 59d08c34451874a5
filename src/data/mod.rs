//! Data: JSONL rows, the text inside them, and tokenizers.

pub mod jsonl;
pub mod text;
pub mod tokenizer;
