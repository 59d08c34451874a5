//! Prompts to continue (`rlhf generate`, PPO's rollouts): `{"prompt"}` or `{"messages"}` rows,
//! rendered with the policy's chat template up to the assistant cue, and cut from the left to
//! fit — the end holds the question and the cue.

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use super::chat::{Message, prompt_messages};
use super::jsonl::{Row, read_rows};
use super::template::ChatTemplate;

/// A prompt as a scorer reads it (messages) and as the policy continues it (ids).
pub struct Prompt {
    pub messages: Vec<Message>,
    pub ids: Vec<u32>,
    /// The row's `prompt` (or `messages`) as written, to echo back.
    pub source: Value,
    /// The row's other fields (`"answer"`, …), for reward programs.
    pub extra: Map<String, Value>,
}

/// Every row of `path`, each kept to at most `max_len` tokens; also returns how many were cut.
/// Errors name `FILE:LINE`.
pub fn read_prompts(
    path: &Path,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_len: usize,
) -> Result<(Vec<Prompt>, usize)> {
    encode_prompts(read_rows(path)?, &path.display().to_string(), tokenizer, template, max_len)
}

/// [`read_prompts`] of rows read from elsewhere (stdin, the command line), named `origin` in
/// errors (`origin:LINE: …`).
pub fn encode_prompts(
    rows: Vec<Row>,
    origin: &str,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_len: usize,
) -> Result<(Vec<Prompt>, usize)> {
    let mut truncated = 0;
    let mut prompts = Vec::new();
    for row in rows {
        let at = row.error_at(Path::new(origin));
        let messages = prompt_messages(&row.fields).map_err(&at)?;
        let mut ids = template.encode_prompt(tokenizer, &messages).map_err(&at)?;
        if ids.len() > max_len {
            ids.drain(..ids.len() - max_len);
            truncated += 1;
        }
        drop(at);
        let mut extra = row.fields;
        let source = extra.remove("prompt").or_else(|| extra.remove("messages"));
        prompts.push(Prompt { messages, ids, source: source.unwrap_or(Value::Null), extra });
    }
    Ok((prompts, truncated))
}
