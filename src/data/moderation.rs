//! Moderation rows: a text and what is known of its labels in OpenAI's eight categories.
//!
//! `{"text" or "prompt": …, "S": 0|1, "H": …}` with OpenAI's codes, or
//! `{"text": …, "labels": {"sexual": 1, …}}` with their names. A missing category means the label
//! is unknown (OpenAI's evaluation set leaves many out): it is masked out of that category's loss
//! and metrics, never read as "no".

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value};

use super::jsonl::read_rows;

/// OpenAI's categories: (code, name), in the order of the classifier's outputs.
pub const CATEGORIES: [(&str, &str); 8] = [
    ("S", "sexual"),
    ("H", "hate"),
    ("V", "violence"),
    ("HR", "harassment"),
    ("SH", "self-harm"),
    ("S3", "sexual/minors"),
    ("H2", "hate/threatening"),
    ("V2", "violence/graphic"),
];

/// Sub-categories and the category each implies: (child, parent) as indices into `CATEGORIES`.
pub const IMPLIES: [(usize, usize); 3] = [(5, 0), (6, 1), (7, 2)];

pub const NUM_CATEGORIES: usize = CATEGORIES.len();

/// Per category: `Some(true/false)` when labelled, `None` when unknown.
pub type Labels = [Option<bool>; NUM_CATEGORIES];

#[derive(Debug, Clone, PartialEq)]
pub struct LabeledText {
    pub text: String,
    pub labels: Labels,
}

/// The text of a row: `text`, or `prompt` (the evaluation set's name for it).
pub fn row_text(row: &Map<String, Value>) -> Result<String, String> {
    match (row.get("text"), row.get("prompt")) {
        (Some(Value::String(t)), None) | (None, Some(Value::String(t))) => Ok(t.clone()),
        (Some(_), Some(_)) => Err("a row has `text` or `prompt`, not both".into()),
        (None, None) => Err("field `text` (or `prompt`) is missing".into()),
        (Some(_), None) => Err("field `text` must be a string".into()),
        (None, Some(_)) => Err("field `prompt` must be a string".into()),
    }
}

impl LabeledText {
    /// Parses a labelled row; the error names the field. A positive sub-category whose parent
    /// is unknown makes the parent positive too (`H2` implies `H`).
    pub fn parse(row: &Map<String, Value>) -> Result<Self, String> {
        let text = row_text(row)?;
        let mut labels: Labels = [None; NUM_CATEGORIES];
        let named = match row.get("labels") {
            None => None,
            Some(Value::Object(named)) => Some(named),
            Some(_) => return Err("field `labels` must be an object of category: 0|1".into()),
        };
        for (i, (code, name)) in CATEGORIES.iter().enumerate() {
            let (field, value) = match named {
                Some(named) => (format!("labels.{name}"), named.get(*name)),
                None => (code.to_string(), row.get(*code)),
            };
            labels[i] = match value {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Some(false),
                Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Some(true),
                Some(other) => return Err(format!("field `{field}` must be 0 or 1, not {other}")),
            };
        }
        if let Some(named) = named {
            let known: Vec<&str> = CATEGORIES.iter().map(|(_, name)| *name).collect();
            if let Some(unknown) = named.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(format!(
                    "field `labels.{unknown}`: unknown category (expected {})",
                    known.join(", ")
                ));
            }
        }
        for (child, parent) in IMPLIES {
            if labels[child] == Some(true) && labels[parent].is_none() {
                labels[parent] = Some(true);
            }
        }
        if labels.iter().all(Option::is_none) {
            return Err("no category is labelled (give at least one of S, H, V, HR, SH, S3, H2, V2, or `labels`)".into());
        }
        Ok(Self { text, labels })
    }
}

/// Every row of a labelled file; errors name `FILE:LINE`.
pub fn read_labeled(path: &Path) -> Result<Vec<LabeledText>> {
    read_rows(path)?
        .iter()
        .map(|row| LabeledText::parse(&row.fields).map_err(row.error_at(path)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(row: Value) -> Result<LabeledText, String> {
        LabeledText::parse(row.as_object().unwrap())
    }

    #[test]
    fn codes_names_and_unknowns() {
        let row = parse(json!({"prompt": "x", "S": 0, "H": 1, "V2": 1})).unwrap();
        assert_eq!(row.text, "x");
        let v = Some(true); // V is unknown, but V2 implies it
        assert_eq!(row.labels, [Some(false), Some(true), v, None, None, None, None, Some(true)]);
        let row = parse(json!({"text": "y", "labels": {"self-harm": true, "hate": 0}})).unwrap();
        assert_eq!(row.labels[4], Some(true));
        assert_eq!(row.labels[1], Some(false));
        assert_eq!(row.labels.iter().filter(|l| l.is_some()).count(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let error = |row: Value| parse(row).unwrap_err();
        assert!(error(json!({"S": 1})).contains("`text` (or `prompt`) is missing"));
        assert!(error(json!({"text": "x", "S": 2})).contains("field `S` must be 0 or 1"));
        assert!(error(json!({"text": "x", "labels": {"spam": 1}})).contains("`labels.spam`"));
        assert!(error(json!({"text": "x"})).contains("no category is labelled"));
    }
}
