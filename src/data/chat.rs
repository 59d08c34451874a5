//! Conversations: messages with roles, as the `messages` data form holds them.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// Parses a `messages` list; errors name the field (`messages[2].role: …`).
pub fn parse_messages(value: &Value, field: &str) -> Result<Vec<Message>, String> {
    let Value::Array(items) = value else {
        return Err(format!("field `{field}` must be a list of messages"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{field}[{i}]");
            let role = match item.get("role").and_then(Value::as_str) {
                Some("system") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some(other) => {
                    return Err(format!(
                        "field `{at}.role`: unknown role \"{other}\" (expected system, user or assistant)"
                    ));
                }
                None => return Err(format!("field `{at}.role` is missing or not a string")),
            };
            let content = item
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("field `{at}.content` is missing or not a string"))?;
            Ok(Message::new(role, content))
        })
        .collect()
}

/// A prompt row (`{"prompt": …}` or `{"messages": […]}` ending with a user turn) as messages.
pub fn prompt_messages(row: &Map<String, Value>) -> Result<Vec<Message>, String> {
    match (row.get("prompt"), row.get("messages")) {
        (Some(Value::String(prompt)), None) => Ok(vec![Message::new(Role::User, prompt.clone())]),
        (Some(_), None) => Err("field `prompt` must be a string".into()),
        (None, Some(messages)) => {
            let messages = parse_messages(messages, "messages")?;
            match messages.last() {
                Some(last) if last.role == Role::User => Ok(messages),
                Some(_) => {
                    Err("field `messages`: the conversation must end with a user turn".into())
                }
                None => Err("field `messages` is empty".into()),
            }
        }
        (Some(_), Some(_)) => Err("a row has either `prompt` or `messages`, not both".into()),
        (None, None) => Err("no `prompt` or `messages` field".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(row: Value) -> Result<Vec<Message>, String> {
        prompt_messages(row.as_object().unwrap())
    }

    #[test]
    fn prompt_forms() {
        assert_eq!(prompt(json!({"prompt": "hi"})).unwrap(), [Message::new(Role::User, "hi")]);
        let chat = json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]});
        assert_eq!(prompt(chat).unwrap().len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let bot = json!({"messages": [{"role": "bot", "content": "x"}]});
        assert_eq!(
            prompt(bot).unwrap_err(),
            "field `messages[0].role`: unknown role \"bot\" (expected system, user or assistant)"
        );
        let ends = json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]});
        assert!(prompt(ends).unwrap_err().contains("must end with a user turn"));
        assert!(prompt(json!({"text": "x"})).unwrap_err().contains("no `prompt` or `messages`"));
    }
}
