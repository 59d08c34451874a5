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
        let unknown = unknown_field(&message);
        let key = match unknown {
            Some(field) if path == "." => field.to_string(),
            Some(field) if !path.ends_with(field) => format!("{path}.{field}"),
            _ => path,
        };
        let origin_of_key = match overrides.iter().find(|o| o.split('=').next() == Some(&key)) {
            Some(o) => format!(" (from --set {o})"),
            None => String::new(),
        };
        let section = key.rsplit_once('.').map_or(String::new(), |(s, _)| format!("{s}."));
        let hint = unknown.map_or(String::new(), |field| {
            did_you_mean(field, &expected_fields(&message), &section)
        });
        bad_input!("{origin}: key `{key}`{origin_of_key}: {}{hint}", plain_types(&message))
    })
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The fields serde lists after "expected" in an unknown-field message.
fn expected_fields(message: &str) -> Vec<&str> {
    let Some((_, list)) = message.split_once(", expected ") else {
        return Vec::new();
    };
    list.split('`').skip(1).step_by(2).collect()
}

/// `\nhint: did you mean `PREFIXnear`?` for an unknown key `typed` among `known`, or nothing
/// when none is near.
pub fn did_you_mean(typed: &str, known: &[&str], prefix: &str) -> String {
    closest(typed, known)
        .map_or(String::new(), |near| format!("\nhint: did you mean `{prefix}{near}`?"))
}

/// Names other tools give some keys (`transformers`' TrainingArguments, TRL), and this one's.
const ALIASES: [(&str, &str); 8] = [
    ("learning_rate", "lr"),
    ("num_train_epochs", "epochs"),
    ("per_device_train_batch_size", "batch_size"),
    ("gradient_accumulation_steps", "grad_accum"),
    ("max_length", "max_len"),
    ("max_seq_length", "max_len"),
    ("output_dir", "dir"),
    ("warmup", "warmup_steps"),
];

/// The known field `typed` most likely meant: another tool's name for it, or one at most two
/// edits away (and fewer edits than it has characters).
fn closest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some((_, ours)) = ALIASES.iter().find(|(theirs, _)| *theirs == typed) {
        if let Some(field) = known.iter().find(|k| *k == ours) {
            return Some(field);
        }
    }
    let limit = 2.min(typed.chars().count().saturating_sub(1));
    known
        .iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance: insertions, deletions and substitutions of characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substituted = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substituted.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// serde's Rust type names in words a config's author reads: `expected usize` → `expected a
/// whole number ≥ 0`.
fn plain_types(message: &str) -> String {
    const WORDS: [(&str, &str); 8] = [
        ("expected usize", "expected a whole number ≥ 0"),
        ("expected u64", "expected a whole number ≥ 0"),
        ("expected u32", "expected a whole number ≥ 0"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("expected a boolean", "expected true or false"),
        ("expected a string", "expected a string (in quotes)"),
    ];
    let mut text = message.to_string();
    for (rust, words) in WORDS {
        if let Some(at) = text.find(rust) {
            // Whole words only: `expected u32` is not inside `expected u320`.
            let end = at + rust.len();
            if !text[end..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                text.replace_range(at..end, words);
            }
        }
    }
    text
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

    /// Issue 48: `lrr = 1` was refused with the list of every key, and no word about `lr`.
    #[test]
    fn an_unknown_key_suggests_the_nearest_one() {
        let hint = |text: &str, overrides: &[&str]| {
            let err = parse::<Demo>(text, "sft.toml", &sets(overrides)).unwrap_err();
            let msg = format!("{err:#}");
            msg.split_once("\nhint: ").map(|(_, h)| h.to_string())
        };
        assert_eq!(hint("[train]\nlrr = 1\n", &[]).as_deref(), Some("did you mean `train.lr`?"));
        assert_eq!(hint("", &["train.epoch=3"]).as_deref(), Some("did you mean `train.epochs`?"));
        assert_eq!(
            hint("[train]\nlearning_rate = 1e-3\n", &[]).as_deref(),
            Some("did you mean `train.lr`?")
        );
        assert_eq!(hint("[trian]\nlr = 1\n", &[]).as_deref(), Some("did you mean `train`?"));
        assert_eq!(hint("[train]\nbatch = 1\n", &[]), None, "nothing near");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    /// Issue 48: config errors said `expected usize`, a Rust type name.
    #[test]
    fn type_errors_name_the_kind_of_value_in_words() {
        let msg = |overrides: &[&str]| {
            format!("{:#}", parse::<Demo>("", "sft.toml", &sets(overrides)).unwrap_err())
        };
        assert!(
            msg(&["train.epochs=-1"]).contains("expected a whole number ≥ 0"),
            "{}",
            msg(&["train.epochs=-1"])
        );
        assert!(msg(&["train.epochs=1.5"]).contains("expected a whole number ≥ 0"));
        assert!(
            msg(&["train.lr=true"]).contains("expected a number"),
            "{}",
            msg(&["train.lr=true"])
        );
        assert!(!msg(&["train.epochs=-1"]).contains("usize"));
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
