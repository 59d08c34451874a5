//! `rlhf sft` end to end: learning, resuming after Ctrl-C, bad data, and checkpoints that
//! `transformers` reads back with the same logits.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

const QA: [(&str, &str); 4] = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What color is the sky?", "The sky is blue."),
    ("How many legs does a cat have?", "A cat has four legs."),
    ("What is two plus two?", "Two plus two is four."),
];

/// A temporary directory with demonstrations (all three forms), a tokenizer trained on them
/// and an SFT config that starts from the `tiny` preset.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let ws = Self { dir: tempfile::tempdir().unwrap() };
        let mut rows = Vec::new();
        for i in 0..48 {
            let (q, a) = QA[i % QA.len()];
            rows.push(match i % 3 {
                0 => json!({"prompt": q, "completion": a}),
                1 => json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}),
                _ => json!({"messages": [
                    {"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]}),
            });
        }
        ws.write_jsonl("sft.jsonl", &rows);
        let out = rlhf(&[
            "tokenizer",
            "train",
            "--data",
            ws.path("sft.jsonl").to_str().unwrap(),
            "--vocab-size",
            "300",
            "--out",
            ws.path("tok").to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let config = r#"
[model]
init = "tiny"
tokenizer = "tok"
[data]
train = "sft.jsonl"
valid_fraction = 0.1
max_len = 64
[train]
max_steps = 40
batch_size = 8
lr = 3e-3
warmup_steps = 5
eval_every = 20
save_every = 0
log_every = 5
[samples]
count = 2
max_new_tokens = 16
[output]
dir = "runs/sft"
"#;
        std::fs::write(ws.path("sft.toml"), config).unwrap();
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_jsonl(&self, name: &str, rows: &[Value]) {
        write_jsonl(&self.path(name), rows);
    }

    /// `rlhf --threads 1 ARGS…` in the workspace: tests run side by side, and LibTorch's
    fn command(&self, args: &[&str]) -> Command {
        rlhf_in(self.dir.path(), args)
    }

    /// `rlhf sft train --config sft.toml --set …`
    fn sft(&self, sets: &[&str], extra: &[&str]) -> Output {
        let mut args = vec!["sft", "train", "--config", "sft.toml"];
        for set in sets {
            args.extend(["--set", set]);
        }
        args.extend(extra);
        self.command(&args).output().unwrap()
    }

    fn metrics(&self, run: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path(run).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

#[test]
fn sft_learns_the_answers_and_greedy_decoding_reproduces_them() {
    let ws = Workspace::new();
    assert_ok(&ws.sft(&["train.max_steps=150"], &[]));
    let run = ws.path("runs/sft");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "generation_config.json",
        "rlhf.json",
        "metrics.jsonl",
        "samples.jsonl",
        "state/trainer.json",
        "state/optimizer.safetensors",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let metrics = ws.metrics("runs/sft");
    let losses: Vec<f64> = metrics.iter().filter_map(|m| m["loss"].as_f64()).collect();
    assert!(losses[0] > 1.0 && *losses.last().unwrap() < 0.05, "loss did not go down: {losses:?}");
    assert!(metrics.iter().any(|m| m["valid_loss"].is_number()), "no validation record");
    let lineage: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("rlhf.json")).unwrap()).unwrap();
    assert_eq!(lineage["stage"], "sft");
    assert_eq!(lineage["data"][0]["path"], "sft.jsonl");
    // `transformers`' generate stops at end of turn as well as end of text.
    let generation: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("generation_config.json")).unwrap())
            .unwrap();
    let tokenizer = rlhf::data::tokenizer::read(&run).unwrap();
    let im_end = tokenizer.token_to_id("<|im_end|>").unwrap();
    assert!(generation["eos_token_id"].as_array().unwrap().contains(&json!(im_end)));

    // The model now answers each question exactly, through the ChatML template it was saved with.
    let prompts: Vec<Value> = QA.iter().map(|(q, _)| json!({"prompt": q})).collect();
    ws.write_jsonl("prompts.jsonl", &prompts);
    let out = ws
        .command(&[
            "generate",
            "--model",
            "runs/sft",
            "--data",
            "prompts.jsonl",
            "--max-new-tokens",
            "24",
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let completions: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for ((_, answer), completion) in QA.iter().zip(&completions) {
        assert_eq!(completion["completion"], *answer);
        assert_eq!(completion["finish_reason"], "eos");
    }

    let out = ws
        .command(&["sft", "eval", "--model", "runs/sft", "--data", "sft.jsonl", "--json"])
        .output()
        .unwrap();
    assert_ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["loss"].as_f64().unwrap() < 0.05, "{report}");
    assert_eq!(report["rows"], 48);
    let ppl = report["perplexity"].as_f64().unwrap();
    assert!((ppl - report["loss"].as_f64().unwrap().exp()).abs() < 1e-9);
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resuming_matches_an_uninterrupted_run() {
    let ws = Workspace::new();
    let sets = ["train.max_steps=300", "train.eval_every=0", "data.valid_fraction=0.0"];
    assert_ok(&ws.sft(&[&sets[..], &["output.dir=runs/straight"]].concat(), &[]));

    let mut args: Vec<String> = ["sft", "train", "--config", "sft.toml"].map(String::from).to_vec();
    for set in sets.iter().chain(&["output.dir=runs/stopped"]) {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    // Wait for training to be under way (a logged step), then press Ctrl-C.
    let command = ws.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (status, seen) = interrupt_at(command, "step 10/");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("--resume"), "{seen}");
    let stopped: Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path("runs/stopped/state/trainer.json")).unwrap(),
    )
    .unwrap();
    let at = stopped["step"].as_u64().unwrap();
    assert!((10..300).contains(&at), "stopped at step {at}");

    assert_ok(&ws.sft(&[&sets[..], &["output.dir=runs/stopped"]].concat(), &["--resume"]));
    let a = read(&ws.path("runs/straight/model.safetensors"));
    let b = read(&ws.path("runs/stopped/model.safetensors"));
    for (name, expected) in &a {
        let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
        assert!(diff <= 1e-6, "{name}: resumed run differs by {diff}");
    }
    // The resumed run's metrics continue the interrupted one's.
    let steps: Vec<u64> =
        ws.metrics("runs/stopped").iter().filter_map(|m| m["step"].as_u64()).collect();
    assert_eq!(steps, (1..=60).map(|i| i * 5).collect::<Vec<u64>>());
}

#[test]
fn bad_rows_name_file_line_and_field_and_write_nothing() {
    let ws = Workspace::new();
    let good = std::fs::read_to_string(ws.path("sft.jsonl")).unwrap();
    let cases = [
        ("{\"prompt\": \"q\", \"completion\": ", "bad.jsonl:3: invalid JSON"),
        ("{\"prompt\": \"q\"}", "bad.jsonl:3: field `completion` is missing"),
        (
            "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
            "bad.jsonl:3: field `messages[0].role`: unknown role \"robot\"",
        ),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"\"}]}",
            "bad.jsonl:3: field `messages[1].content`: empty assistant turn",
        ),
        ("{\"completion\": \"a\", \"prompt\": 7}", "bad.jsonl:3: field `prompt` must be a string"),
    ];
    for (bad_line, expected) in cases {
        let lines: Vec<&str> =
            good.lines().take(2).chain([bad_line]).chain(good.lines().skip(2)).collect();
        std::fs::write(ws.path("bad.jsonl"), lines.join("\n")).unwrap();
        let out = ws.sft(&["data.train=bad.jsonl"], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad_line}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "expected `{expected}` in:\n{}", stderr(&out));
        assert!(!ws.path("runs").exists(), "an output directory was created");
    }
    let out = ws.sft(&["model.tokenizer=nowhere"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let out = ws.sft(&["data.max_len=100000"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("exceeds the model's context window of 256"), "{}", stderr(&out));
    assert!(!ws.path("runs").exists());
}

/// Issue 48: the default `data.max_len` of 512 failed on a model with a smaller context
/// window, though the user had set nothing; a value they set still has to fit.
#[test]
fn the_default_max_len_is_capped_at_a_short_window() {
    let ws = Workspace::new();
    let config = std::fs::read_to_string(ws.path("sft.toml")).unwrap();
    std::fs::write(ws.path("unset.toml"), config.replace("max_len = 64\n", "")).unwrap();
    let out = ws
        .command(&["sft", "train", "--config", "unset.toml", "--set", "train.max_steps=2"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert!(
        stderr(&out).contains("note: sft: data.max_len is 256, the model's context window (the default 512 does not fit it"),
        "{}",
        stderr(&out)
    );
    let lineage = rlhf::checkpoint::Lineage::read(&ws.path("runs/sft")).unwrap();
    assert!(lineage.config["config"]["data"]["max_len"].is_null(), "recorded as unset");

    let out = ws.sft(&["data.max_len=512", "output.dir=runs/explicit"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("key `data.max_len` = 512 exceeds"), "{}", stderr(&out));
}

#[test]
fn long_rows_are_cut_from_the_left_or_dropped_and_counted() {
    let ws = Workspace::new();
    let long_prompt = "What is the capital of France? ".repeat(30);
    let long_answer = "Paris is the capital of France. ".repeat(30);
    let mut rows: Vec<Value> =
        QA.iter().map(|(q, a)| json!({"prompt": q, "completion": a})).collect();
    rows.push(json!({"prompt": long_prompt, "completion": "Paris."}));
    rows.push(json!({"prompt": "Where?", "completion": long_answer}));
    ws.write_jsonl("long.jsonl", &rows);
    let sets = ["data.train=long.jsonl", "data.valid_fraction=0.0", "train.max_steps=2"];
    let out = ws.sft(&sets, &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains(
            "2 row(s) longer than data.max_len = 64: 1 cut from the left of the prompt, 1 dropped"
        ),
        "{}",
        stderr(&out)
    );
    let out =
        ws.sft(&[&sets[..], &["data.truncation=drop", "output.overwrite=true"]].concat(), &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("0 cut from the left of the prompt, 2 dropped"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_existing_run_is_neither_replaced_nor_resumed_by_accident() {
    let ws = Workspace::new();
    let out = ws.sft(&["train.max_steps=2"], &["--resume"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("holds no resumable run"), "{}", stderr(&out));
    assert_ok(&ws.sft(&["train.max_steps=2"], &[]));
    let out = ws.sft(&["train.max_steps=2"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    std::fs::write(
        ws.path("other.jsonl"),
        std::fs::read_to_string(ws.path("sft.jsonl")).unwrap().replace("Paris", "Lyon"),
    )
    .unwrap();
    let out = ws.sft(&["train.max_steps=4", "data.train=other.jsonl"], &["--resume"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the data files differ"), "{}", stderr(&out));
}

/// Issue 48: replacing output was `--force` for every other command but only `--set
/// output.overwrite=true` for training; both work now, and the hint names `--force`.
#[test]
fn force_replaces_an_existing_run_as_other_commands_do() {
    let ws = Workspace::new();
    assert_ok(&ws.sft(&["train.max_steps=2"], &[]));
    let out = ws.sft(&["train.max_steps=2"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("hint: pass --resume to continue that run, or --force to replace it"),
        "{}",
        stderr(&out)
    );
    assert_ok(&ws.sft(&["train.max_steps=3"], &["--force"]));
    let lineage = rlhf::checkpoint::Lineage::read(&ws.path("runs/sft")).unwrap();
    assert_eq!(lineage.metrics["step"], 3, "replaced by the new run");
    assert_ok(&ws.sft(&["train.max_steps=2", "output.overwrite=true"], &[]));
    let out = ws.sft(&[], &["--force", "--resume"]);
    assert_eq!(out.status.code(), Some(2), "contradictory flags");
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let ws = Workspace::new();
    let out = ws.sft(
        &["train.lr=1e30", "train.max_grad_norm=0", "train.warmup_steps=0", "train.max_steps=20"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("the loss is"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no checkpoint was written yet"), "{}", stderr(&out));
    assert!(!ws.path("runs/sft").exists());
}

/// Logits of a saved model on a padded batch, from rlhf and from `transformers`.
fn assert_transformers_agrees(model: &Path, tmp: &Path) {
    use burn::prelude::*;
    let device = cpu();
    let loaded = rlhf::model::load_causal_lm(model, &device).unwrap();
    let ids: Vec<i64> = vec![3, 17, 42, 99, 120, 7, 0, 0, 5, 9, 61, 200, 33, 80, 81, 82];
    let mask: Vec<i64> = vec![1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    let mut io = rlhf::model::weights::NamedTensors::new();
    io.insert("input_ids".into(), TensorData::new(ids.clone(), [2, 8]));
    io.insert("attention_mask".into(), TensorData::new(mask.clone(), [2, 8]));
    let (io_path, out_path) = (tmp.join("io.safetensors"), tmp.join("hf.safetensors"));
    rlhf::model::weights::write_file(&io_path, &io).unwrap();
    hf_forward(&[(model.to_path_buf(), io_path, out_path.clone())]);
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 8]), &device);
    let mask_tensor = Tensor::<2, Int>::from_data(TensorData::new(mask.clone(), [2, 8]), &device);
    let logits = loaded.model.forward(ids, &rlhf::model::PaddedBatch::new(mask_tensor));
    let ours = floats(&logits.into_data());
    let theirs = floats(&read(&out_path)["logits"]);
    let vocab = ours.len() / 16;
    let diff = max_abs_diff(&ours, &theirs, |i| mask[i / vocab] == 1);
    assert!(diff < 1e-4, "{}: max |Δlogit| = {diff}", model.display());
}

#[test]
fn checkpoints_load_in_transformers_and_chain_from_a_base() {
    let ws = Workspace::new();
    // From a preset (Llama family), then from that checkpoint as `model.base` with the HH template.
    assert_ok(
        &ws.sft(&["model.init=llama-tiny", "train.max_steps=5", "output.dir=runs/first"], &[]),
    );
    let base = "runs/first";
    let out = ws.sft(&["model.base=runs/first", "output.dir=runs/second"], &[]);
    assert_eq!(out.status.code(), Some(2), "init and base together are refused");
    assert!(stderr(&out).contains("exclude each other"), "{}", stderr(&out));
    let out = ws.sft(&["model.pooling=mean", "output.dir=runs/pooled"], &[]);
    assert_eq!(out.status.code(), Some(2), "a decoder has no pooling to choose");
    assert!(stderr(&out).contains("key `model.pooling` applies to"), "{}", stderr(&out));
    let config = std::fs::read_to_string(ws.path("sft.toml"))
        .unwrap()
        .replace("init = \"tiny\"\ntokenizer = \"tok\"", &format!("base = \"{base}\""));
    std::fs::write(ws.path("sft.toml"), config).unwrap();
    assert_ok(&ws.sft(&["train.max_steps=5", "output.dir=runs/second", "data.template=hh"], &[]));
    let lineage: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("runs/second/rlhf.json")).unwrap())
            .unwrap();
    assert_eq!(lineage["parent"]["path"], base);
    let template = std::fs::read_to_string(ws.path("runs/second/chat_template.jinja")).unwrap();
    assert!(template.contains("Human: "), "the HH template travels with the checkpoint");
    for run in ["runs/first", "runs/second"] {
        assert_transformers_agrees(&ws.path(run), ws.dir.path());
    }

    // model.train_layers = 1 of llama-tiny's 2 blocks: the embeddings and block 0 stay, block 1,
    // the final norm and the untied LM head train.
    assert_ok(&ws.sft(&["train.max_steps=2", "output.dir=runs/top", "model.train_layers=1"], &[]));
    let (first, top) = (
        read(&ws.path("runs/first/model.safetensors")),
        read(&ws.path("runs/top/model.safetensors")),
    );
    for name in ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"] {
        assert_eq!(floats(&top[name]), floats(&first[name]), "{name} changed");
    }
    for name in ["model.layers.1.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight"] {
        assert_ne!(floats(&top[name]), floats(&first[name]), "{name} did not train");
    }
}

#[test]
fn resume_refuses_a_changed_learning_rate_and_says_what_it_resumes() {
    let ws = Workspace::new();
    assert_ok(&ws.sft(&["train.max_steps=2", "train.eval_every=0"], &[]));
    let out = ws.sft(&["train.max_steps=4", "train.eval_every=0", "train.lr=5e-2"], &["--resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("train.lr: 0.003 → 0.05"), "{err}");
    assert!(err.contains("--accept-changes"), "{err}");
    assert!(!err.contains("train.max_steps:"), "extending keys are not refused: {err}");

    let out = ws.sft(&["train.max_steps=3", "train.eval_every=0"], &["--resume"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("resuming"), "{err}");
    assert!(err.contains("at step 2 of 3"), "{err}");
    assert!(err.contains("train.max_steps 2 → 3"), "{err}");

    let sets = ["train.max_steps=4", "train.eval_every=0", "train.lr=5e-2"];
    assert_ok(&ws.sft(&sets, &["--resume", "--accept-changes"]));
    let lineage: Value =
        serde_json::from_str(&std::fs::read_to_string(ws.path("runs/sft/rlhf.json")).unwrap())
            .unwrap();
    let resumes = lineage["config"]["resumes"].as_array().expect("resumes recorded");
    assert_eq!(resumes.len(), 2, "{resumes:?}");
    assert_eq!(resumes[1]["step"], 3);
    assert_eq!(resumes[1]["changed"]["train.lr"], json!([0.003, 0.05]));
}

#[test]
fn a_missing_path_in_a_config_names_its_key_and_where_it_was_looked_for() {
    let ws = Workspace::new();
    let out = ws.sft(&["data.train=nope.jsonl"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("sft.toml: key `data.train` = \"nope.jsonl\": no such file"), "{err}");
    assert!(err.contains("paths in a config are read from the current directory"), "{err}");

    std::fs::write(
        ws.path("base.toml"),
        std::fs::read_to_string(ws.path("sft.toml"))
            .unwrap()
            .replace("init = \"tiny\"\ntokenizer = \"tok\"", "base = \"HuggingFaceTB/SmolLM2\""),
    )
    .unwrap();
    let out = ws.command(&["sft", "train", "--config", "base.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("key `model.base`"), "{err}");
    assert!(err.contains("looks like a Hugging Face hub id"), "{err}");

    std::fs::write(ws.path("model.gguf"), b"GGUF").unwrap();
    let out =
        rlhf(&["generate", "--model", ws.path("model.gguf").to_str().unwrap(), "--data", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("hint: import it first: rlhf model import"), "{}", stderr(&out));
}

#[test]
fn keep_state_until_done_drops_the_state_from_the_finished_run() {
    let ws = Workspace::new();
    let sets = ["train.max_steps=2", "train.eval_every=0", "output.keep_state=until-done"];
    assert_ok(&ws.sft(&sets, &[]));
    assert!(ws.path("runs/sft/model.safetensors").is_file());
    assert!(!ws.path("runs/sft/state").exists(), "state/ is dropped at the end");
    let out = ws.sft(&["train.max_steps=3", "train.eval_every=0"], &["--resume"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("holds no resumable run"), "{}", stderr(&out));
}
