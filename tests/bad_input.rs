//! The bad-input matrix: every subcommand that reads JSONL, on each class of bad file and bad
//! row, and every training stage on each class of bad config. Each must exit 2 with a message
//! naming the file and line and field (or the key), and create no output. Input that other
//! tools write and that means one thing — a byte-order mark, CRLF line ends, blank lines — is
//! accepted.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;

use common::*;
use serde_json::{Value, json};

struct Workspace {
    dir: PathBuf,
}

fn workspace() -> &'static Workspace {
    static WORKSPACE: OnceLock<Workspace> = OnceLock::new();
    WORKSPACE.get_or_init(Workspace::new)
}

/// Each stage's one-step config: its `[model]` section, then the rest reading `DATA`.
const CONFIGS: [(&str, &str, &str); 6] = [
    (
        "sft",
        "[model]\ninit = \"tiny\"\ntokenizer = \"tok\"\n",
        "[data]\ntrain = \"DATA\"\nmax_len = 48\n",
    ),
    ("reward", "[model]\nbase = \"runs/base\"\n", "[data]\ntrain = \"DATA\"\nmax_len = 48\n"),
    (
        "ppo",
        "[model]\npolicy = \"runs/base\"\nreward = \"runs/rm\"\n",
        "[data]\nprompts = \"DATA\"\nmax_prompt_len = 16\n[rollout]\nmax_new_tokens = 4\n[ppo]\nmini_batch_size = 1\n",
    ),
    ("moderate", "[model]\nbase = \"runs/base\"\n", "[data]\ntrain = \"DATA\"\nmax_len = 48\n"),
    ("dpo", "[model]\nbase = \"runs/base\"\n", "[data]\ntrain = \"DATA\"\nmax_len = 48\n"),
    ("kto", "[model]\nbase = \"runs/base\"\n", "[data]\ntrain = \"DATA\"\nmax_len = 48\n"),
];
const TRAIN: &str = "[train]\nmax_steps = 1\nbatch_size = 1\neval_every = 0\n";

/// The good training data of `stage`.
fn data_of(stage: &str) -> String {
    format!("{stage}.jsonl")
}

/// `stage`'s config reading `data` into `out`, with `model` as its `[model]` section if given.
fn config_text(stage: &str, data: &str, out: &str, model: Option<&str>) -> String {
    let (_, default_model, rest) = CONFIGS.iter().find(|(s, ..)| *s == stage).unwrap();
    let model = model.unwrap_or(default_model);
    // KTO pairs each row's prompt with another row's answer: two rows a batch at least.
    let train = match stage {
        "kto" => TRAIN.replace("batch_size = 1", "batch_size = 2"),
        _ => TRAIN.to_string(),
    };
    format!("{model}{}{train}[output]\ndir = \"{out}\"\n", rest.replace("DATA", data))
}

impl Workspace {
    /// A tokenizer, a one-step SFT model, reward model and moderation classifier.
    fn new() -> Self {
        let dir = root().join("target/test-work/bad-input");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cases")).unwrap();
        let ws = Self { dir };
        let rows = |row: &dyn Fn(usize) -> Value| (0..16).map(row).collect::<Vec<_>>();
        let q = |i| format!("Question {i}?");
        let files: [(&str, Vec<Value>); 6] = [
            ("sft", rows(&|i| json!({"prompt": q(i), "completion": "Yes, quite so."}))),
            ("reward", rows(&|i| json!({"prompt": q(i), "chosen": "Yes.", "rejected": "No."}))),
            ("ppo", rows(&|i| json!({"prompt": q(i)}))),
            ("moderate", rows(&|i| json!({"text": q(i), "HR": i % 2}))),
            ("dpo", rows(&|i| json!({"prompt": q(i), "chosen": "Yes.", "rejected": "No."}))),
            ("kto", rows(&|i| json!({"prompt": q(i), "completion": "Yes.", "label": i % 2 == 0}))),
        ];
        for (stage, rows) in &files {
            write_jsonl(&ws.dir.join(data_of(stage)), rows);
        }
        std::fs::copy(ws.dir.join("sft.jsonl"), ws.dir.join("rows.jsonl")).unwrap();
        let tokenizer =
            ["tokenizer", "train", "--data", "rows.jsonl", "--vocab-size", "300", "--out", "tok"];
        assert_ok(&ws.run(&tokenizer));
        for (stage, out) in [("sft", "runs/base"), ("reward", "runs/rm"), ("moderate", "runs/mod")]
        {
            let config = format!("{stage}.toml");
            std::fs::write(ws.dir.join(&config), config_text(stage, &data_of(stage), out, None))
                .unwrap();
            assert_ok(&ws.run(&[stage, "train", "--config", &config]));
        }
        // The SFT model claiming fewer embedding rows than its tokenizer has tokens.
        let small = ws.dir.join("runs/small-embedding");
        std::fs::create_dir(&small).unwrap();
        for entry in std::fs::read_dir(ws.dir.join("runs/base")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, small.join(path.file_name().unwrap())).unwrap();
            }
        }
        let config = small.join("config.json");
        let mut json: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        json["vocab_size"] = 100.into();
        std::fs::write(config, json.to_string()).unwrap();
        ws
    }

    fn run(&self, args: &[&str]) -> Output {
        rlhf_in(&self.dir, args).output().unwrap()
    }
}

/// A command that reads a JSONL file: how to call it on FILE, a good row, bad rows with the
/// field each message must name, and whether it writes an output (`out` in its case directory).
struct Reader {
    name: &'static str,
    args: fn(&str, &str) -> Vec<String>,
    good: Value,
    bad_rows: Vec<(Value, &'static str)>,
    writes: bool,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn train(stage: &'static str) -> fn(&str, &str) -> Vec<String> {
    match stage {
        "sft" => |config, _| strings(&["sft", "train", "--config", config]),
        "reward" => |config, _| strings(&["reward", "train", "--config", config]),
        "ppo" => |config, _| strings(&["ppo", "train", "--config", config]),
        "dpo" => |config, _| strings(&["dpo", "train", "--config", config]),
        "kto" => |config, _| strings(&["kto", "train", "--config", config]),
        _ => |config, _| strings(&["moderate", "train", "--config", config]),
    }
}

/// The config key a training stage reads its data from.
fn data_key(reader: &Reader) -> &'static str {
    if reader.name == "ppo train" { "prompts" } else { "train" }
}

fn readers() -> Vec<Reader> {
    let prompt = json!({"prompt": "Question?"});
    let robot = json!({"messages": [{"role": "robot", "content": "Beep."}]});
    let sft_bad = vec![
        (json!({"prompt": 3, "completion": "x"}), "field `prompt` must be a string"),
        (json!({"prompt": "Q?"}), "field `completion` is missing"),
        (json!({"prompt": "Q?", "completion": ""}), "field `completion` is empty"),
        (robot.clone(), "field `messages[0].role`: unknown role \"robot\""),
    ];
    let pair_bad = vec![
        (json!({"prompt": "Q?", "chosen": 3, "rejected": "No."}), "fields `chosen` and `rejected`"),
        (json!({"prompt": "Q?", "chosen": "Yes."}), "field `rejected`"),
    ];
    let prompt_bad = vec![
        (json!({"prompt": 3}), "field `prompt`"),
        (json!({"question": "Q?"}), "no `prompt` or `messages` field"),
        (robot, "unknown role \"robot\""),
    ];
    let text_bad = vec![
        (json!({"text": 3, "HR": 1}), "field `text` must be a string"),
        (json!({"HR": 1}), "field `text` (or `prompt`) is missing"),
        (json!({"text": "Hi.", "HR": "yes"}), "field `HR` must be 0 or 1"),
        (
            json!({"text": "Hi.", "labels": {"rudeness": 1}}),
            "field `labels.rudeness`: unknown category",
        ),
    ];
    let kto_bad = vec![
        (json!({"prompt": "Q?", "completion": "Yes."}), "field `label` is missing"),
        (json!({"prompt": "Q?", "completion": "Yes.", "label": 1}), "field `label` must be true"),
        (json!({"prompt": "Q?", "completion": 3, "label": true}), "field `completion` must be"),
        (json!({"prompt": "Q?", "responses": ["a", "b"]}), "a ranking (`responses`)"),
    ];
    let sft_row = json!({"prompt": "Question?", "completion": "Yes, quite so."});
    let pair_row = json!({"prompt": "Question?", "chosen": "Yes.", "rejected": "No."});
    let text_row = json!({"text": "Hello there.", "HR": 0});
    vec![
        Reader {
            name: "sft train",
            args: train("sft"),
            good: sft_row.clone(),
            bad_rows: sft_bad.clone(),
            writes: true,
        },
        Reader {
            name: "reward train",
            args: train("reward"),
            good: pair_row.clone(),
            bad_rows: pair_bad.clone(),
            writes: true,
        },
        Reader {
            name: "ppo train",
            args: train("ppo"),
            good: prompt.clone(),
            bad_rows: prompt_bad.clone(),
            writes: true,
        },
        Reader {
            name: "moderate train",
            args: train("moderate"),
            good: text_row.clone(),
            bad_rows: text_bad.clone(),
            writes: true,
        },
        Reader {
            name: "dpo train",
            args: train("dpo"),
            good: pair_row.clone(),
            bad_rows: pair_bad.clone(),
            writes: true,
        },
        Reader {
            name: "kto train",
            args: train("kto"),
            good: json!({"prompt": "Question?", "completion": "Yes.", "label": true}),
            bad_rows: kto_bad,
            writes: true,
        },
        Reader {
            name: "sft eval",
            args: |_, data| strings(&["sft", "eval", "--model", "runs/base", "--data", data]),
            good: sft_row.clone(),
            bad_rows: sft_bad,
            writes: false,
        },
        Reader {
            name: "reward eval",
            args: |_, data| strings(&["reward", "eval", "--model", "runs/rm", "--data", data]),
            good: pair_row.clone(),
            bad_rows: pair_bad.clone(),
            writes: false,
        },
        Reader {
            name: "dpo eval",
            args: |_, data| {
                let model = ["--model", "runs/base", "--reference", "runs/base"];
                strings(&[&["dpo", "eval", "--data", data][..], &model].concat())
            },
            good: pair_row,
            bad_rows: pair_bad,
            writes: false,
        },
        Reader {
            name: "reward score",
            args: |out, data| {
                strings(&["reward", "score", "--model", "runs/rm", "--data", data, "--out", out])
            },
            good: json!({"prompt": "Question?", "response": "Yes."}),
            bad_rows: vec![(json!({"prompt": "Q?", "response": 3}), "field `response`")],
            writes: true,
        },
        Reader {
            name: "ppo eval",
            args: |out, data| {
                strings(&[
                    "ppo",
                    "eval",
                    "--policy",
                    "runs/base",
                    "--reward",
                    "runs/rm",
                    "--data",
                    data,
                    "--max-new-tokens",
                    "4",
                    "--out",
                    out,
                ])
            },
            good: prompt.clone(),
            bad_rows: prompt_bad.clone(),
            writes: true,
        },
        Reader {
            name: "moderate eval",
            args: |_, data| strings(&["moderate", "eval", "--model", "runs/mod", "--data", data]),
            good: text_row.clone(),
            bad_rows: text_bad,
            writes: false,
        },
        Reader {
            name: "moderate score",
            args: |_, data| strings(&["moderate", "score", "--model", "runs/mod", "--data", data]),
            good: json!({"text": "Hello there."}),
            bad_rows: vec![(json!({"text": 3}), "field `text` must be a string")],
            writes: false,
        },
        Reader {
            name: "generate",
            args: |out, data| {
                strings(&[
                    "generate",
                    "--model",
                    "runs/base",
                    "--data",
                    data,
                    "--max-new-tokens",
                    "4",
                    "--out",
                    out,
                ])
            },
            good: prompt,
            bad_rows: prompt_bad,
            writes: true,
        },
        Reader {
            name: "chat --load",
            args: |_, data| {
                strings(&[
                    "chat",
                    "--model",
                    "runs/base",
                    "--load",
                    data,
                    "--prompt",
                    "Hi",
                    "--max-new-tokens",
                    "2",
                ])
            },
            good: json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}),
            bad_rows: vec![(
                json!({"messages": [{"role": "robot", "content": "Beep."}]}),
                "unknown role \"robot\"",
            )],
            writes: false,
        },
        Reader {
            name: "tokenizer train",
            args: |out, data| {
                strings(&[
                    "tokenizer",
                    "train",
                    "--data",
                    data,
                    "--vocab-size",
                    "280",
                    "--out",
                    out,
                ])
            },
            good: sft_row,
            bad_rows: vec![(
                json!({"prompt": 3, "completion": "x"}),
                "field `prompt` must be a string",
            )],
            writes: true,
        },
    ]
}

/// Files that are wrong whatever the command: the bytes after two good rows (so the error is on
/// line 3), and the message each must contain.
fn bad_files(good: &Value) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let good = format!("{good}\n{good}\n");
    let with = |tail: &[u8]| [good.as_bytes(), tail].concat();
    vec![
        ("malformed JSON", with(b"{\"prompt\": \"unfinished\n"), ":3: invalid JSON"),
        ("invalid UTF-8", with(b"{\"prompt\": \"caf\xE9\"}\n"), ":3: not valid UTF-8"),
        (
            "a duplicate key",
            with(b"{\"prompt\": \"a\", \"prompt\": \"b\"}\n"),
            ":3: invalid JSON: duplicate key `prompt`",
        ),
        ("NaN", with(b"{\"prompt\": \"a\", \"HR\": NaN}\n"), ":3: invalid JSON"),
        ("an infinite number", with(b"{\"prompt\": \"a\", \"HR\": 1e999}\n"), ":3: invalid JSON"),
        ("not an object", with(b"[\"prompt\"]\n"), ":3: expected a JSON object"),
        ("an empty file", Vec::new(), ": no rows"),
        ("only blank lines", b"\n  \n\r\n".to_vec(), ": no rows"),
    ]
}

/// Files that other tools write and that mean one thing: accepted.
fn accepted_files(good: &Value) -> Vec<(&'static str, Vec<u8>)> {
    let rows = format!("{good}\n{good}\n");
    vec![
        ("a byte-order mark", [b"\xEF\xBB\xBF", rows.as_bytes()].concat()),
        ("CRLF line ends", rows.replace('\n', "\r\n").into_bytes()),
        ("blank lines", format!("\n{good}\n\n   \n{good}\n\n").into_bytes()),
    ]
}

/// Runs `reader` on `bytes` in a fresh case directory: (output, the data file, whether an
/// output appeared).
fn run_case(ws: &Workspace, reader: &Reader, case: &str, bytes: &[u8]) -> (Output, String, bool) {
    let id = format!("{}-{case}", reader.name).replace([' ', '\''], "-");
    let data = format!("cases/{id}.jsonl");
    std::fs::write(ws.dir.join(&data), bytes).unwrap();
    let (output, wrote) = run_reader(ws, reader, &id, &data);
    (output, data, wrote)
}

/// Runs `reader` on the file `data`, a training stage through its own config `cases/ID.toml`,
/// writing to `cases/ID.out`: (output, whether that output appeared).
fn run_reader(ws: &Workspace, reader: &Reader, id: &str, data: &str) -> (Output, bool) {
    let out = format!("cases/{id}.out");
    let stage = reader.name.strip_suffix(" train").filter(|s| *s != "tokenizer");
    let first = match stage {
        Some(stage) => {
            let config = format!("cases/{id}.toml");
            std::fs::write(ws.dir.join(&config), config_text(stage, data, &out, None)).unwrap();
            config
        }
        None => out.clone(),
    };
    let args = (reader.args)(&first, data);
    let output = ws.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let wrote = ws.dir.join(&out).exists();
    (output, wrote)
}

fn check_reader(reader: &Reader) {
    let ws = workspace();
    let mut tried = 0;
    let bad_rows = reader.bad_rows.iter().map(|(row, needle)| {
        let good = format!("{}\n{}\n{row}\n", reader.good, reader.good);
        ("a bad row", good.into_bytes(), *needle)
    });
    for (case, bytes, needle) in bad_files(&reader.good).into_iter().chain(bad_rows) {
        let (output, data, wrote) = run_case(ws, reader, case, &bytes);
        let err = stderr(&output);
        let context = format!("{} on {case}:\n{err}", reader.name);
        assert_eq!(output.status.code(), Some(2), "{context}");
        assert!(err.contains(&data), "the file is named: {context}");
        assert!(err.contains(needle), "expected {needle:?}: {context}");
        assert!(!err.contains("panicked"), "{context}");
        assert!(!wrote, "nothing is written: {context}");
        tried += 1;
    }
    for (case, bytes) in accepted_files(&reader.good) {
        let (output, _, wrote) = run_case(ws, reader, case, &bytes);
        assert_ok(&output);
        assert!(wrote || !reader.writes, "{} on {case}: no output", reader.name);
        tried += 1;
    }
    eprintln!("{}: {tried} inputs", reader.name);
}

#[test]
fn training_stages_refuse_bad_data() {
    readers().iter().filter(|r| r.name.ends_with(" train")).for_each(check_reader);
}

#[test]
fn evaluation_and_scoring_refuse_bad_data() {
    readers().iter().filter(|r| !r.name.ends_with(" train")).for_each(check_reader);
}

#[test]
fn missing_paths_and_directories_where_files_belong() {
    let ws = workspace();
    for reader in readers() {
        // A training config's path is checked first and named by its key (#48).
        for (case, data, needle, in_config) in [
            ("a missing file", "cases/nowhere.jsonl", "No such file", "no such file"),
            ("a directory", "runs", "Is a directory", "a directory, not a file"),
        ] {
            let id = format!("{}-{case}", reader.name).replace(' ', "-");
            let (output, wrote) = run_reader(ws, &reader, &id, data);
            let err = stderr(&output);
            let context = format!("{} on {case}:\n{err}", reader.name);
            assert_eq!(output.status.code(), Some(2), "{context}");
            let stage = [
                "sft train",
                "reward train",
                "ppo train",
                "moderate train",
                "dpo train",
                "kto train",
            ];
            let needle = match stage.contains(&reader.name) {
                true => format!("key `data.{}` = \"{data}\": {in_config}", data_key(&reader)),
                false => needle.to_string(),
            };
            assert!(err.contains(data) && err.contains(&needle), "{context}");
            assert!(!wrote, "{context}");
        }
    }
}

/// Config errors: each names the key, or the checkpoint at fault.
#[test]
fn training_stages_refuse_bad_configs() {
    let ws = workspace();
    let keys: [(&str, &str, &str); 5] = [
        ("an unknown key", "lrr = 1.0", "key `train.lrr`: unknown field `lrr`"),
        ("a wrongly typed key", "epochs = \"many\"", "key `train.epochs`: invalid type"),
        ("a duplicate key", "max_steps = 2", "duplicate key"),
        ("a NaN learning rate", "lr = nan", "train.lr"),
        ("an infinite learning rate", "lr = inf", "train.lr"),
    ];
    let models: [(&str, &str, &str); 4] = [
        ("a missing model", "runs/nowhere", "= \"runs/nowhere\": no such model directory"),
        ("a file as the model", "rows.jsonl", "= \"rows.jsonl\": a file, not a model directory"),
        ("a checkpoint of the wrong kind", "runs/mod", "runs/mod"),
        ("a tokenizer larger than the embedding", "runs/small-embedding", "the tokenizer has"),
    ];
    let mut tried = 0;
    for (stage, ..) in CONFIGS {
        let out = format!("cases/{stage}-config.out");
        let mut texts: Vec<(&str, String, &str)> = Vec::new();
        for (case, line, needle) in keys {
            let text = config_text(stage, &data_of(stage), &out, None);
            texts.push((case, text.replace("[train]\n", &format!("[train]\n{line}\n")), needle));
        }
        for (case, path, needle) in models {
            // A moderation classifier may continue training; a reward model may not.
            let (path, needle) = match (stage, path) {
                ("moderate", "runs/mod") => ("runs/rm", "runs/rm"),
                _ => (path, needle),
            };
            let model = match stage {
                "ppo" => format!("[model]\npolicy = \"{path}\"\nreward = \"runs/rm\"\n"),
                _ => format!("[model]\nbase = \"{path}\"\n"),
            };
            texts.push((case, config_text(stage, &data_of(stage), &out, Some(&model)), needle));
        }
        for (case, text, needle) in texts {
            let config = format!("cases/{stage}-{}.toml", case.replace(' ', "-"));
            std::fs::write(ws.dir.join(&config), text).unwrap();
            let output = ws.run(&[stage, "train", "--config", &config]);
            let err = stderr(&output);
            let context = format!("{stage} with {case}:\n{err}");
            assert_eq!(output.status.code(), Some(2), "{context}");
            assert!(err.contains(needle), "expected {needle:?}: {context}");
            assert!(!err.contains("panicked"), "{context}");
            assert!(!ws.dir.join(&out).exists(), "nothing is written: {context}");
            tried += 1;
        }
    }
    eprintln!("configs: {tried} bad configs refused");
}

/// A 10 MB row is valid input: cut to `data.max_len` like any long row, and counted.
#[test]
fn a_ten_megabyte_line_is_cut_like_any_long_row() {
    let ws = workspace();
    let reader = readers().into_iter().find(|r| r.name == "sft train").unwrap();
    let long = json!({"prompt": "x".repeat(10 << 20), "completion": "Yes."});
    let text = format!("{long}\n{}\n", reader.good);
    let (output, _, wrote) = run_case(ws, &reader, "a-10-MB-line", text.as_bytes());
    assert_ok(&output);
    assert!(wrote);
    assert!(
        stderr(&output).contains("1 row(s) longer than data.max_len = 48: 1 cut"),
        "{}",
        stderr(&output)
    );
}
