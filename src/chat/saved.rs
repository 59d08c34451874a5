//! `/save` and `/load`: a conversation as one `{"messages": […]}` JSONL row, the form
//! `rlhf sft train` reads. `/load` takes a file's last row, so a `--log` file resumes its
//! latest conversation too.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::bad_input;
use crate::data::chat::{Message, Role, parse_messages};
use crate::data::jsonl::read_rows;

pub fn save(path: &Path, messages: &[Message]) -> Result<()> {
    let row = json!({ "messages": messages });
    std::fs::write(path, format!("{row}\n"))
        .map_err(|e| bad_input!("cannot write {}: {e}", path.display()))
}

/// The conversation in `path`'s last row: an optional system message first, then user and
/// assistant messages.
pub fn load(path: &Path) -> Result<Vec<Message>> {
    let rows = read_rows(path)?;
    let row = rows.last().expect("read_rows returns at least one row");
    let at = row.error_at(path);
    let Some(value) = row.fields.get("messages") else {
        return Err(at("not a conversation: no `messages` field".into()));
    };
    let messages = parse_messages(value, "messages").map_err(&at)?;
    if let Some(i) = messages.iter().skip(1).position(|m| m.role == Role::System) {
        return Err(at(format!("field `messages[{}]`: a system message must come first", i + 1)));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_conversations_load_back_and_bad_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        let messages = vec![Message::new(Role::System, "s"), Message::new(Role::User, "q")];
        save(&path, &messages).unwrap();
        assert_eq!(load(&path).unwrap(), messages);
        std::fs::write(&path, "{\"prompt\": \"x\"}\n").unwrap();
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("c.jsonl:1: not a conversation"), "{err}");
        std::fs::write(&path, "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"system\", \"content\": \"s\"}]}\n").unwrap();
        assert!(format!("{:#}", load(&path).unwrap_err()).contains("messages[1]"));
    }
}
