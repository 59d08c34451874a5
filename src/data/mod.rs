//! Data: JSONL rows, the text and conversations inside them, chat templates, tokenizers.

pub mod batch;
pub mod chat;
pub mod completion;
pub mod feedback;
pub mod jsonl;
pub mod moderation;
pub mod pair;
pub mod preference;
pub mod prompts;
pub mod scoring;
pub mod sft;
pub mod template;
pub mod text;
pub mod tokenizer;
