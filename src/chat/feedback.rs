//! `/good` and `/bad`: the last answer with a thumbs up or down, appended as one KTO row in
//! TRL's unpaired conversational form — `{"prompt": [messages…], "completion": [{"role":
//! "assistant", …}], "label": true|false}`, what `rlhf kto train` reads — to the file beside
//! `--prefs`: `prefs.jsonl` → `prefs.kto.jsonl`.
//!
//! A file of its own rather than `--prefs` itself because the readers are strict on purpose:
//! `rlhf kto train` refuses `/compare`'s rankings (they carry no thumbs up or down) and
//! `rlhf reward train` / `rlhf dpo train` refuse unpaired rows, so two files keep each one
//! readable as it is by the trainer it is for.

use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use super::log::{append as append_row, open_for_append};
use crate::data::chat::{Message, Role};

/// The KTO file beside a `--prefs` file: `NAME.kto.EXT`, or `NAME.kto.jsonl` without an
/// extension.
pub fn kto_file(prefs: &Path) -> PathBuf {
    let (name, extension) = match (prefs.file_stem(), prefs.extension()) {
        (Some(stem), Some(extension)) => (stem.to_os_string(), extension.to_os_string()),
        _ => (prefs.file_name().unwrap_or_default().to_os_string(), "jsonl".into()),
    };
    let mut file: OsString = name;
    file.push(".kto.");
    file.push(extension);
    prefs.with_file_name(file)
}

/// Appends one judged answer to `path`; how many rows the file holds now.
pub fn append(path: &Path, prompt: &[Message], answer: &str, good: bool) -> Result<usize> {
    let completion = [Message::new(Role::Assistant, answer)];
    let row = json!({ "prompt": prompt, "completion": completion, "label": good });
    let display = || path.display().to_string();
    append_row(&mut open_for_append(path)?, &row).with_context(display)?;
    let file = std::fs::File::open(path).with_context(display)?;
    let mut rows = 0;
    for line in std::io::BufReader::new(file).lines() {
        rows += usize::from(!line.with_context(display)?.trim().is_empty());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::feedback::Feedback;

    #[test]
    fn the_kto_file_sits_beside_prefs() {
        let beside = |prefs: &str| kto_file(Path::new(prefs));
        assert_eq!(beside("prefs.jsonl"), Path::new("prefs.kto.jsonl"));
        assert_eq!(beside("data/chat.prefs.jsonl"), Path::new("data/chat.prefs.kto.jsonl"));
        assert_eq!(beside("data/prefs"), Path::new("data/prefs.kto.jsonl"));
    }

    #[test]
    fn rows_are_what_the_kto_reader_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("prefs.kto.jsonl");
        let prompt = [Message::new(Role::System, "Be brief."), Message::new(Role::User, "Hi?")];
        assert_eq!(append(&path, &prompt, "Hello.", true).unwrap(), 1);
        assert_eq!(append(&path, &prompt[1..], "Go away.", false).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let read: Vec<Feedback> = text
            .lines()
            .flat_map(|line| {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                Feedback::parse(row.as_object().unwrap()).unwrap()
            })
            .collect();
        assert_eq!(
            read,
            [
                Feedback { prompt: prompt.to_vec(), answer: "Hello.".into(), desirable: true },
                Feedback {
                    prompt: prompt[1..].to_vec(),
                    answer: "Go away.".into(),
                    desirable: false
                },
            ]
        );
    }
}
