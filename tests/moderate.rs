//! `rlhf moderate` end to end on MiniLM: training on labelled texts with unknown labels,
//! thresholds, evaluation, OpenAI-shaped verdicts (arguments, files, stdin, long texts), a
//! saved classifier that `transformers` reads with the same scores, and bad input.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::{Value, json};

const SAFE: [&str; 8] = [
    "What a lovely morning for a walk in the park.",
    "Can you recommend a good book about history?",
    "I baked fresh bread today with my family.",
    "The train was late, but the view was nice.",
    "Thanks for your help with the homework.",
    "Our team won the football match last night.",
    "I am learning to play the guitar slowly.",
    "Let us meet for coffee next week.",
];
const HARASSMENT: [&str; 4] = [
    "You are a worthless idiot and everyone laughs at you.",
    "Nobody likes you, you pathetic stupid loser.",
    "Shut up, you idiot, you are too stupid to talk.",
    "You disgusting loser, you should be ashamed.",
];
const SELF_HARM: [&str; 4] = [
    "I want to hurt myself tonight.",
    "I keep thinking about cutting myself again.",
    "I feel like hurting myself, nothing matters.",
    "Tonight I will harm myself again.",
];

/// Labelled rows: safe texts, harassment and self-harm, with some labels left unknown.
fn rows(copies: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    for k in 0..copies {
        let prefix = ["", "Well, ", "Honestly, ", "Listen: "][k % 4];
        for text in SAFE {
            rows.push(json!({"text": format!("{prefix}{text}"), "S": 0, "H": 0, "V": 0, "HR": 0, "SH": 0}));
        }
        for text in HARASSMENT {
            rows.push(json!({"prompt": format!("{prefix}{text}"), "HR": 1, "SH": 0, "S": 0}));
        }
        for text in SELF_HARM {
            rows.push(json!({"text": format!("{prefix}{text}"), "labels": {"self-harm": 1, "harassment": 0}}));
        }
    }
    rows
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let ws = Self { dir: tempfile::tempdir().unwrap() };
        ws.write_jsonl("train.jsonl", &rows(4));
        ws.write_jsonl("valid.jsonl", &rows(2)[8..]);
        let config = format!(
            r#"
[model]
base = "{}"
[data]
train = "train.jsonl"
valid = "valid.jsonl"
valid_fraction = 0.0
max_len = 48
[train]
epochs = 6
batch_size = 8
lr = 1e-4
warmup_steps = 4
eval_every = 0
log_every = 5
[output]
dir = "runs/mod"
"#,
            root().join("models/minilm").display()
        );
        std::fs::write(ws.path("moderate.toml"), config).unwrap();
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_jsonl(&self, name: &str, rows: &[Value]) {
        write_jsonl(&self.path(name), rows);
    }

    fn command(&self, args: &[&str]) -> Command {
        rlhf_in(self.dir.path(), args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn train(&self, sets: &[&str]) -> Output {
        let mut args = vec!["moderate", "train", "--config", "moderate.toml"];
        for set in sets {
            args.extend(["--set", set]);
        }
        self.run(&args)
    }
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const NAMES: [&str; 8] = [
    "sexual",
    "hate",
    "harassment",
    "self-harm",
    "sexual/minors",
    "hate/threatening",
    "violence/graphic",
    "violence",
];

#[test]
fn trains_evaluates_and_scores_in_openais_shape() {
    let ws = Workspace::new();
    let out = ws.train(&[]);
    assert_ok(&out);
    let run = ws.path("runs/mod");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "moderation.json",
        "rlhf.json",
        "metrics.jsonl",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["id2label"]["4"], "self-harm");

    // eval: the two learnable categories are found; unknown-only ones have no AUPRC.
    let out =
        ws.run(&["moderate", "eval", "--model", "runs/mod", "--data", "valid.jsonl", "--json"]);
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{report}");
    let category = |code: &str| {
        report["categories"].as_array().unwrap().iter().find(|c| c["code"] == code).unwrap().clone()
    };
    assert!(category("HR")["auprc"].as_f64().unwrap() > 0.9, "{report}");
    assert!(category("SH")["auprc"].as_f64().unwrap() > 0.9, "{report}");
    assert!(category("SH")["f1"].as_f64().unwrap() > 0.8, "{report}");
    assert_eq!(category("V2")["known"], 0);
    assert!(category("V2")["auprc"].is_null());
    // HR is known on safe and harassment rows and on self-harm rows (labels form).
    assert_eq!(category("HR")["known"], 24);
    assert_eq!(category("HR")["positives"], 8);
    assert!(report["any"]["auprc"].as_f64().unwrap() > 0.9, "{report}");
    // Calibrated on validation: a scale and shift per category, the error reported.
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("moderation.json")).unwrap())
            .unwrap();
    assert_eq!(settings["calibration"].as_object().unwrap().len(), 8, "{settings}");
    assert!(settings["calibration"]["self-harm"]["scale"].as_f64().unwrap() > 0.0);
    let ece = report["ece"].as_f64().unwrap();
    assert!((0.0..0.25).contains(&ece), "ECE {ece}: {report}");
    assert!(category("SH")["ece"].as_f64().is_some());

    // score: arguments, a file, stdin — one verdict per text, in OpenAI's shape.
    let out = ws.run(&["moderate", "score", "--model", "runs/mod", SELF_HARM[0], SAFE[0]]);
    assert_ok(&out);
    let verdicts = json_lines(&out);
    assert_eq!(verdicts.len(), 2);
    for verdict in &verdicts {
        let keys: Vec<&String> = verdict.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["flagged", "categories", "category_scores"]);
        let categories: Vec<&String> = verdict["categories"].as_object().unwrap().keys().collect();
        assert_eq!(categories, NAMES);
        assert!(verdict["categories"].as_object().unwrap().values().all(Value::is_boolean));
        let scores: Vec<&String> = verdict["category_scores"].as_object().unwrap().keys().collect();
        assert_eq!(scores, NAMES);
    }
    assert_eq!(verdicts[0]["flagged"], true);
    assert_eq!(verdicts[0]["categories"]["self-harm"], true);
    assert_eq!(verdicts[1]["flagged"], false);

    let mut child = ws
        .command(&["moderate", "score", "--model", "runs/mod"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}\n{}", HARASSMENT[1], SAFE[2]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_ok(&out);
    let verdicts = json_lines(&out);
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdicts[0]["categories"]["harassment"], true);
    assert_eq!(verdicts[1]["flagged"], false);

    // A long text is read whole: a harmful sentence past the first window still flags it.
    let long = format!("{} {}", SAFE.join(" ").repeat(4), SELF_HARM[1].repeat(6));
    ws.write_jsonl(
        "long.jsonl",
        &[json!({"text": long}), json!({"text": SAFE.join(" ").repeat(4)})],
    );
    let out = ws.run(&["moderate", "score", "--model", "runs/mod", "--data", "long.jsonl"]);
    assert_ok(&out);
    let verdicts = json_lines(&out);
    assert_eq!(verdicts[0]["categories"]["self-harm"], true, "{:?}", verdicts[0]);
    assert_eq!(verdicts[1]["flagged"], false, "{:?}", verdicts[1]);

    assert_transformers_agrees(&ws, "runs/mod");
}

/// `transformers` reads the saved classifier with the same scores (short texts: one window),
/// once each logit is calibrated as `moderation.json` says: σ(scale·logit + shift).
fn assert_transformers_agrees(ws: &Workspace, run: &str) {
    let settings = ws.path(run).join("moderation.json");
    let settings: Value =
        serde_json::from_str(&std::fs::read_to_string(settings).unwrap()).unwrap();
    let calibration = &settings["calibration"];
    let texts = [SAFE[3], HARASSMENT[2], SELF_HARM[3]];
    ws.write_jsonl("texts.jsonl", &texts.iter().map(|t| json!({"text": t})).collect::<Vec<_>>());
    let out = ws.run(&["moderate", "score", "--model", run, "--data", "texts.jsonl"]);
    assert_ok(&out);
    let ours = json_lines(&out);
    let out = Command::new(python())
        .arg(root().join("scripts/fixtures/hf_classify.py"))
        .args([ws.path(run), ws.path("texts.jsonl")])
        .output()
        .unwrap();
    assert_ok(&out);
    let logits: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
    for (verdict, row) in ours.iter().zip(&logits) {
        // Outputs in id2label order; parents (sexual, hate, violence) may take a child's score.
        let unmodified = [
            (3, "harassment"),
            (4, "self-harm"),
            (5, "sexual/minors"),
            (6, "hate/threatening"),
            (7, "violence/graphic"),
        ];
        for (i, name) in unmodified {
            let (scale, shift) = (
                calibration[name]["scale"].as_f64().unwrap(),
                calibration[name]["shift"].as_f64().unwrap(),
            );
            let theirs = 1.0 / (1.0 + (-(scale * row[i] + shift)).exp());
            let mine = verdict["category_scores"][name].as_f64().unwrap();
            assert!(
                (mine - theirs).abs() < 1e-4,
                "{run} {name}: rlhf {mine} vs transformers {theirs}"
            );
        }
    }
}

/// Issue 48: a classifier whose chosen thresholds fell to ~0.05 flagged "Hello, how are you
/// today?", and `moderate train` ended without a word. Here no classifier can do better: the
/// one positive text is the same as the 39 negative ones.
#[test]
fn a_classifier_that_cannot_tell_texts_apart_is_warned_about() {
    let ws = Workspace::new();
    let rows: Vec<Value> = (0..40)
        .map(|i| {
            let harassment = u8::from(i == 7);
            json!({"text": "Hello, how are you today?", "HR": harassment, "SH": 0, "S": 0, "H": 0, "V": 0})
        })
        .collect();
    ws.write_jsonl("same.jsonl", &rows);
    let out = ws.train(&[
        "data.train=same.jsonl",
        "data.valid=same.jsonl",
        "train.max_steps=1",
        "output.dir=runs/same",
    ]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("warning: moderate: validation AUPRC (any category) is 0.025"), "{err}");
    assert!(err.contains("warning: moderate: the threshold chosen for harassment (0.0"), "{err}");
    assert!(err.contains("so the classifier flags almost any text for it"), "{err}");
    assert!(err.contains("hint: more labelled texts"), "{err}");
    let line = err.lines().find(|l| l.contains("the threshold chosen for")).unwrap();
    assert!(line.contains("at most 0.05"), "{line}");
}

#[test]
fn a_decoder_backbone_learns_the_categories_and_transformers_reads_the_same_scores() {
    let ws = Workspace::new();
    let tokenizer =
        ["tokenizer", "train", "--data", "train.jsonl", "--vocab-size", "300", "--out", "tok"];
    assert_ok(&ws.run(&tokenizer));
    assert_ok(&ws.run(&[
        "model",
        "init",
        "--preset",
        "tiny",
        "--tokenizer",
        "tok",
        "--out",
        "base",
    ]));
    let out =
        ws.train(&["model.base=base", "train.epochs=30", "train.lr=3e-3", "output.dir=runs/dec"]);
    assert_ok(&out);
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("runs/dec/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(config["problem_type"], "multi_label_classification");
    assert_eq!(config["id2label"]["4"], "self-harm");

    let out =
        ws.run(&["moderate", "eval", "--model", "runs/dec", "--data", "valid.jsonl", "--json"]);
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (i, name) in [(3, "harassment"), (4, "self-harm")] {
        let auprc = report["categories"][i]["auprc"].as_f64().unwrap();
        assert!(auprc > 0.9, "{name}: AUPRC {auprc}");
    }
    assert_transformers_agrees(&ws, "runs/dec");
}

#[test]
fn mean_pooling_trains_and_transformers_reads_it_the_documented_way() {
    let ws = Workspace::new();
    assert_ok(&ws.train(&["model.pooling=mean", "train.epochs=1"]));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("runs/mod/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["classifier_pooling"], "mean");
    assert_transformers_agrees(&ws, "runs/mod");
}

#[test]
fn the_fresh_head_trains_at_head_lr() {
    // Adam's first step moves each weight by its learning rate; the head starts from the same
    // seeded draw in both runs, so the heads end 1e-3 apart.
    let ws = Workspace::new();
    let sets = ["train.max_steps=1", "train.warmup_steps=0", "train.weight_decay=0"];
    for (head_lr, dir) in [("1e-3", "runs/a"), ("2e-3", "runs/b")] {
        let head = format!("train.head_lr={head_lr}");
        let out = format!("output.dir={dir}");
        assert_ok(&ws.train(&[&sets[..], &[&head, &out]].concat()));
    }
    let (a, b) =
        (read(&ws.path("runs/a/model.safetensors")), read(&ws.path("runs/b/model.safetensors")));
    let gap =
        max_abs_diff(&floats(&a["classifier.weight"]), &floats(&b["classifier.weight"]), |_| true);
    assert!((gap - 1e-3).abs() < 1e-5, "heads differ by {gap}");
    let body = "bert.encoder.layer.5.output.dense.weight";
    assert_eq!(floats(&a[body]), floats(&b[body]), "the body trains at lr in both");
}

#[test]
fn bad_rows_and_models_are_clear_errors() {
    let ws = Workspace::new();
    let cases = [
        (json!({"S": 1}), "bad.jsonl:2: field `text` (or `prompt`) is missing"),
        (json!({"text": "x", "HR": 3}), "bad.jsonl:2: field `HR` must be 0 or 1"),
        (
            json!({"text": "x", "labels": {"spam": 1}}),
            "bad.jsonl:2: field `labels.spam`: unknown category",
        ),
        (json!({"text": "x"}), "bad.jsonl:2: no category is labelled"),
    ];
    for (bad, expected) in cases {
        ws.write_jsonl("bad.jsonl", &[rows(1)[0].clone(), bad]);
        let out = ws.train(&["data.train=bad.jsonl"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(expected), "expected `{expected}` in:\n{}", stderr(&out));
        assert!(!ws.path("runs").exists(), "an output directory was created");
    }
    let out = ws.run(&[
        "moderate",
        "score",
        "--model",
        root().join("models/minilm").to_str().unwrap(),
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a moderation model"), "{}", stderr(&out));
}
