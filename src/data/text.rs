//! The text inside a row of any of the data forms (SFT, reward, PPO, moderation), for
//! training a tokenizer on exactly what the stages will read.

use serde_json::{Map, Value};

/// Fields that hold text in some data form.
pub const TEXT_FIELDS: [&str; 7] =
    ["text", "prompt", "completion", "chosen", "rejected", "responses", "messages"];

/// Every string of a row's text fields: plain strings, lists of strings (`responses`) and
/// message lists (`messages`, or `chosen`/`rejected` as conversations).
pub fn row_texts(row: &Map<String, Value>) -> Result<Vec<&str>, String> {
    let mut texts = Vec::new();
    for field in TEXT_FIELDS {
        if let Some(value) = row.get(field) {
            collect(value, field, &mut texts)?;
        }
    }
    if texts.is_empty() {
        return Err(format!("no text field (expected one of {})", TEXT_FIELDS.join(", ")));
    }
    Ok(texts)
}

fn collect<'a>(value: &'a Value, path: &str, texts: &mut Vec<&'a str>) -> Result<(), String> {
    match value {
        Value::String(s) => texts.push(s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                match item {
                    Value::Object(message) => match message.get("content") {
                        Some(Value::String(s)) => texts.push(s),
                        _ => return Err(format!("field `{path}.content` must be a string")),
                    },
                    other => collect(other, &path, texts)?,
                }
            }
        }
        Value::Null => {}
        _ => return Err(format!("field `{path}` must be a string or a list")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(row: Value) -> Result<Vec<String>, String> {
        row_texts(row.as_object().unwrap()).map(|t| t.into_iter().map(String::from).collect())
    }

    #[test]
    fn reads_every_data_form() {
        assert_eq!(texts(json!({"prompt": "p", "completion": "c"})).unwrap(), ["p", "c"]);
        assert_eq!(
            texts(json!({"prompt": "p", "responses": ["a", "b"]})).unwrap(),
            ["p", "a", "b"]
        );
        let chat = json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]});
        assert_eq!(texts(chat).unwrap(), ["hi", "yo"]);
        let pairs = json!({"chosen": [{"role": "user", "content": "q"}], "rejected": "r"});
        assert_eq!(texts(pairs).unwrap(), ["q", "r"]);
        assert_eq!(texts(json!({"text": "t", "S": 1})).unwrap(), ["t"]);
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(texts(json!({"label": 1})).unwrap_err().starts_with("no text field"));
        let bad = json!({"messages": [{"role": "user", "content": 3}]});
        assert_eq!(texts(bad).unwrap_err(), "field `messages[0].content` must be a string");
        assert_eq!(
            texts(json!({"prompt": 5})).unwrap_err(),
            "field `prompt` must be a string or a list"
        );
    }
}
