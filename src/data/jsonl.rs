//! JSONL files: one JSON object a line. Every error names `FILE:LINE`.

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::bad_input;

/// One row with the 1-based line it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: usize,
    pub fields: Map<String, Value>,
}

/// Reads every non-blank line of `path` as a JSON object.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input!("cannot read {}: {e}", path.display()))?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|e| bad_input!("{}:{line_no}: invalid JSON: {e}", path.display()))?;
        let Value::Object(fields) = value else {
            return Err(bad_input!("{}:{line_no}: expected a JSON object", path.display()));
        };
        rows.push(Row { line: line_no, fields });
    }
    if rows.is_empty() {
        return Err(bad_input!("{}: no rows", path.display()));
    }
    Ok(rows)
}
