//! JSONL files: one JSON object a line. Every error names `FILE:LINE`.
//!
//! Accepted as they come from editors and other tools: a UTF-8 byte-order mark, CRLF line
//! ends, blank lines. Refused: invalid UTF-8, and a key given twice in one object (JSON
//! parsers disagree on which one wins, so the row means different things to different tools).

use std::fmt;
use std::path::Path;

use anyhow::Result;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::bad_input;

/// One row with the 1-based line it came from.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: usize,
    pub fields: Map<String, Value>,
}

impl Row {
    /// The error for something wrong in this row of `path`: `FILE:LINE: message`, bad input.
    pub fn error_at(&self, path: &Path) -> impl Fn(String) -> anyhow::Error {
        let at = format!("{}:{}", path.display(), self.line);
        move |message| bad_input!("{at}: {message}")
    }
}

/// Reads every non-blank line of `path` as a JSON object.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let bytes =
        std::fs::read(path).map_err(|e| bad_input!("cannot read {}: {e}", path.display()))?;
    let rows = parse_rows(&bytes).map_err(|e| bad_input!("{}{e}", path.display()))?;
    if rows.is_empty() {
        return Err(bad_input!("{}: no rows", path.display()));
    }
    Ok(rows)
}

/// The rows of a JSONL text; an error reads `:LINE: what` (or `: what`), to follow the path.
pub fn parse_rows(bytes: &[u8]) -> Result<Vec<Row>, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if is_json_array_of_objects(bytes) {
        return Err(": this is a JSON array; write one object a line (JSONL)\nhint: convert it with: jq -c '.[]' FILE.json > FILE.jsonl".into());
    }
    let mut rows = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = std::str::from_utf8(line).map_err(|e| {
            format!(":{line_no}: not valid UTF-8 (at byte {})", e.valid_up_to() + 1)
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let Strict(value) =
            serde_json::from_str(line).map_err(|e| format!(":{line_no}: invalid JSON: {e}"))?;
        let Value::Object(fields) = value else {
            return Err(format!(":{line_no}: expected a JSON object"));
        };
        rows.push(Row { line: line_no, fields });
    }
    Ok(rows)
}

/// A `.json` file of objects rather than JSONL: its first line opens an array that either
/// goes on over more lines or holds objects (a one-line array of numbers is just a bad row).
fn is_json_array_of_objects(bytes: &[u8]) -> bool {
    if !bytes.trim_ascii_start().starts_with(b"[") {
        return false;
    }
    let text = String::from_utf8_lossy(bytes);
    let Some(first) = text.lines().map(str::trim).find(|l| !l.is_empty()) else {
        return false;
    };
    match serde_json::from_str::<Value>(first) {
        _ if !first.starts_with('[') => false,
        Err(_) => true,
        Ok(Value::Array(items)) => !items.is_empty() && items.iter().all(Value::is_object),
        Ok(_) => false,
    }
}

/// A JSON value read with every object's keys checked for repeats.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let Strict(value) = access.next_value()?;
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = access.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> Result<Vec<usize>, String> {
        parse_rows(text).map(|rows| rows.iter().map(|r| r.line).collect())
    }

    #[test]
    fn bom_crlf_and_blank_lines_are_accepted() {
        let text = b"\xEF\xBB\xBF{\"a\": 1}\r\n\r\n  \n{\"a\": [1, {\"b\": null}]}\r\n";
        assert_eq!(lines(text), Ok(vec![1, 4]));
        assert_eq!(parse_rows(text).unwrap()[1].fields["a"][1]["b"], Value::Null);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            lines(b"{\"a\": 1}\n{\"a\": \"\xFF\"}\n").unwrap_err(),
            ":2: not valid UTF-8 (at byte 8)"
        );
        let duplicate = lines(b"{\"a\": 1}\n{\"a\": {\"b\": 1, \"b\": 2}}").unwrap_err();
        assert!(duplicate.starts_with(":2: invalid JSON: duplicate key `b`"), "{duplicate}");
        assert!(lines(b"{\"a\": NaN}").unwrap_err().starts_with(":1: invalid JSON"));
        assert!(lines(b"{\"a\": 1e999}").unwrap_err().starts_with(":1: invalid JSON"));
        assert_eq!(lines(b"[1]").unwrap_err(), ":1: expected a JSON object");
    }

    #[test]
    fn a_json_array_file_is_told_to_become_jsonl() {
        let err = lines(b"[\n  {\"text\": \"a\"}\n]\n").unwrap_err();
        assert!(err.contains("this is a JSON array; write one object a line (JSONL)"), "{err}");
        assert!(err.contains("jq -c '.[]'"), "{err}");
    }
}
