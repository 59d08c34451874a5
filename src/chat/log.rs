//! `--log DIR`: the chat as training data, appended as it goes.
//!
//! - `conversations.jsonl`: after every answer, the conversation so far as a
//!   `{"messages": […]}` row (the form `rlhf sft train` reads) with the conversation's id, the
//!   turn, the model's path and hash, the sampler settings and the answer's seed. Rows of one
//!   conversation share `conversation`; its last row is the whole of it.
//! - `moderation.jsonl` (with `--moderation`): every screened message in `rlhf moderate`'s
//!   data form, its predicted labels as OpenAI's codes (`"HR": 1`), plus its scores and where
//!   it came from, so a reviewer can correct the labels and retrain the classifier.
//!
//! Each row is written with one append, so a crash loses at most the answer in progress.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use crate::checkpoint::Source;
use crate::data::chat::{Message, Role};
use crate::data::moderation::CATEGORIES;
use crate::generate::SamplingConfig;
use crate::moderation::Moderation;

pub struct ChatLog {
    conversations: File,
    moderation: File,
    model: Source,
    /// Names this run's conversation; `/reset` and `/load` start a new one.
    id: String,
    started: u32,
    turn: usize,
}

impl ChatLog {
    pub fn open(dir: &Path, model_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut log = Self {
            conversations: open_for_append(&dir.join("conversations.jsonl"))?,
            moderation: open_for_append(&dir.join("moderation.jsonl"))?,
            model: Source::model_dir(model_dir)?,
            id: String::new(),
            started: 0,
            turn: 0,
        };
        log.new_conversation();
        Ok(log)
    }

    /// Rows from now on belong to a new conversation.
    pub fn new_conversation(&mut self) {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.started += 1;
        self.id = format!("{secs}-{}-{}", std::process::id(), self.started);
        self.turn = 0;
    }

    /// The conversation after an answer.
    pub fn conversation(
        &mut self,
        messages: &[Message],
        sampling: &SamplingConfig,
        seed: u64,
        interrupted: bool,
    ) -> Result<()> {
        self.turn += 1;
        let mut row = json!({
            "messages": messages,
            "conversation": self.id,
            "turn": self.turn,
            "model": self.model,
            "sampling": sampling,
            "seed": seed,
        });
        if interrupted {
            row["interrupted"] = true.into();
        }
        append(&mut self.conversations, &row)
    }

    /// A screened message with the labels the classifier gave it.
    pub fn moderated(&mut self, role: Role, text: &str, verdict: &Moderation) -> Result<()> {
        let mut row = Map::new();
        row.insert("text".into(), text.into());
        for ((code, _), &flagged) in CATEGORIES.iter().zip(&verdict.categories) {
            row.insert(code.to_string(), u8::from(flagged).into());
        }
        row.insert("source".into(), role.as_str().into());
        row.insert("flagged".into(), verdict.flagged.into());
        row.insert("category_scores".into(), verdict.to_json()["category_scores"].clone());
        row.insert("conversation".into(), self.id.clone().into());
        append(&mut self.moderation, &Value::Object(row))
    }
}

pub fn open_for_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// One row as one write, so a crash never leaves half a line.
pub fn append(file: &mut File, row: &Value) -> Result<()> {
    file.write_all(format!("{row}\n").as_bytes()).context("appending a row")?;
    file.flush().context("flushing a row")
}
