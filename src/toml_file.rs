//! One mechanism for every TOML file a user writes (stage configs, model presets): read the
//! file, apply `--set section.key=value` overrides, then deserialize into a typed struct
//! (`deny_unknown_fields`, documented defaults). Every failure names the file and the key, and
//! is bad input (exit code 2).

use std::path::Path;

use anyhow::Result;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::bad_input;

/// Reads `path` and applies `overrides` (each `dotted.key=value`).
pub fn load<T: DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad_input!(
            "cannot read config {}: {e}\nhint: pass an existing file, e.g. one under configs/",
            path.display()
        )
    })?;
    parse(&text, &path.display().to_string(), overrides)
}

/// Parses TOML `text` (named `origin` in errors) with `overrides` applied.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &str, overrides: &[String]) -> Result<T> {
    let table = parse_table(text, origin, overrides)?;
    from_table(table, origin, overrides)
}

/// Parses TOML `text` into a table with `overrides` applied, without typing it yet.
pub fn parse_table(text: &str, origin: &str, overrides: &[String]) -> Result<Table> {
    let mut table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad_input!("{origin}: {}", e.to_string().trim_end()))?;
    for assignment in overrides {
        apply_override(&mut table, assignment)?;
    }
    Ok(table)
}

/// Deserialises an already-parsed table; `overrides` only improve the error message.
pub fn from_table<T: DeserializeOwned>(
    table: Table,
    origin: &str,
    overrides: &[String],
) -> Result<T> {
    let deserializer = Value::Table(table);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let full = err.inner().to_string();
        let message = full.lines().next().unwrap_or_default().to_string(); // toml repeats the key below
        let key = match unknown_field(&message) {
            Some(field) if path == "." => field.to_string(),
            Some(field) if !path.ends_with(field) => format!("{path}.{field}"),
            _ => path,
        };
        let origin_of_key = match overrides.iter().find(|o| o.split('=').next() == Some(&key)) {
            Some(o) => format!(" (from --set {o})"),
            None => String::new(),
        };
        bad_input!("{origin}: key `{key}`{origin_of_key}: {message}")
    })
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// `train.lr=3e-4` sets `[train] lr = 3e-4`. The value is read as a TOML literal, and as a plain
/// string when it is not one, so `--set data.train=x.jsonl` needs no quotes.
fn apply_override(table: &mut Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        bad_input!("--set {assignment}: expected section.key=value (e.g. --set train.lr=1e-4)")
    })?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad_input!("--set {assignment}: `{key}` is not a dotted key"));
    }
    let value = parse_literal(raw.trim());
    let (last, sections) = parts.split_last().expect("split yields at least one part");
    let mut current = table;
    for (depth, section) in sections.iter().enumerate() {
        let entry =
            current.entry(section.to_string()).or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            _ => {
                return Err(bad_input!(
                    "--set {assignment}: `{}` is a value, not a section",
                    parts[..=depth].join(".")
                ));
            }
        };
    }
    current.insert(last.to_string(), value);
    Ok(())
}

fn parse_literal(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EXIT_BAD_INPUT, exit_code};
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        #[serde(default)]
        train: Train,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Train {
        lr: f64,
        epochs: usize,
        name: String,
    }

    impl Default for Train {
        fn default() -> Self {
            Self { lr: 1e-4, epochs: 1, name: "run".into() }
        }
    }

    fn sets(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let demo: Demo = parse("[train]\nepochs = 3\n", "a.toml", &[]).unwrap();
        assert_eq!(demo.train, Train { epochs: 3, ..Train::default() });
    }

    #[test]
    fn overrides_are_typed_and_create_sections() {
        let demo: Demo = parse("", "a.toml", &sets(&["train.lr=3e-4", "train.name=big"])).unwrap();
        assert_eq!(demo.train.lr, 3e-4);
        assert_eq!(demo.train.name, "big");
    }

    #[test]
    fn unknown_key_is_named_with_its_section() {
        let err = parse::<Demo>("[train]\nlrr = 1\n", "sft.toml", &[]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("sft.toml: key `train.lrr`: unknown field `lrr`"), "{msg}");
        assert_eq!(exit_code(&err), EXIT_BAD_INPUT);
    }

    #[test]
    fn wrong_type_from_override_names_key_and_flag() {
        let err = parse::<Demo>("", "sft.toml", &sets(&["train.epochs=many"])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("key `train.epochs` (from --set train.epochs=many)"), "{msg}");
        assert!(msg.contains("invalid type: string \"many\""), "{msg}");
    }

    #[test]
    fn malformed_override_and_syntax_errors_are_bad_input() {
        for err in [
            parse::<Demo>("", "x.toml", &sets(&["train.lr"])).unwrap_err(),
            parse::<Demo>("[train\n", "x.toml", &[]).unwrap_err(),
            load::<Demo>(Path::new("does/not/exist.toml"), &[]).unwrap_err(),
        ] {
            assert_eq!(exit_code(&err), EXIT_BAD_INPUT, "{err:#}");
        }
    }
}
