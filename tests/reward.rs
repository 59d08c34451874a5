//! `rlhf reward` end to end: a learnable preference, every row form, decoder and cross-encoder
//! backbones whose saved scores `transformers` reproduces, resuming, and bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

const TOPICS: [&str; 8] =
    ["cats", "the sea", "bread", "trains", "music", "the moon", "chess", "gardens"];
const KIND: [&str; 3] = [
    "Sure, happy to help with {t}. Here is a clear and friendly answer.",
    "Of course! Let me explain {t} gently and clearly.",
    "Glad you asked about {t}; here is a helpful overview.",
];
const NEUTRAL: [&str; 2] = ["I do not know much about {t}.", "{t}? I have no opinion."];
const RUDE: [&str; 3] = [
    "No. {t} is boring, figure it out yourself.",
    "Stop asking me about {t}, it is a dumb question.",
    "Whatever. {t}? Go away.",
];

/// `n` comparisons in all four forms where kind beats neutral beats rude; `seed` varies the
/// combinations so a validation file differs from the training file.
fn preferences(n: usize, seed: usize) -> Vec<Value> {
    let pick = |list: &[&str], i: usize, t: &str| list[i % list.len()].replace("{t}", t);
    (0..n)
        .map(|i| {
            let j = i * 7 + seed * 13;
            let t = TOPICS[(j / 3) % TOPICS.len()];
            let prompt = format!("Can you tell me about {t}?");
            let (kind, rude) = (pick(&KIND, j, t), pick(&RUDE, j / 2, t));
            let turn = |answer: &str| {
                json!([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
            };
            match i % 4 {
                0 => json!({"prompt": prompt, "chosen": kind, "rejected": rude}),
                1 => json!({
                    "chosen": format!("\n\nHuman: {prompt}\n\nAssistant: {kind}"),
                    "rejected": format!("\n\nHuman: {prompt}\n\nAssistant: {rude}"),
                }),
                2 => json!({"prompt": prompt, "responses": [kind, pick(&NEUTRAL, j, t), rude]}),
                _ => json!({"chosen": turn(&kind), "rejected": turn(&rude)}),
            }
        })
        .collect()
}

/// A temporary directory with comparisons, a tokenizer trained on them and a reward config
/// that starts a `tiny` decoder from scratch.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let ws = Self { dir: tempfile::tempdir().unwrap() };
        ws.write_jsonl("prefs.jsonl", &preferences(160, 0));
        ws.write_jsonl("valid.jsonl", &preferences(40, 1));
        let out = ws.run(&[
            "tokenizer",
            "train",
            "--data",
            "prefs.jsonl",
            "--vocab-size",
            "400",
            "--out",
            "tok",
        ]);
        assert_ok(&out);
        let config = r#"
[model]
init = "tiny"
tokenizer = "tok"
[data]
train = "prefs.jsonl"
valid = "valid.jsonl"
max_len = 96
[train]
max_steps = 60
batch_size = 8
lr = 1e-3
warmup_steps = 5
eval_every = 30
save_every = 0
log_every = 5
[output]
dir = "runs/rm"
"#;
        std::fs::write(ws.path("reward.toml"), config).unwrap();
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// reward.toml starts from all-MiniLM-L6-v2 (a cross-encoder) instead of a tiny decoder.
    fn start_from_minilm(&self) {
        let config = std::fs::read_to_string(self.path("reward.toml")).unwrap().replace(
            "init = \"tiny\"\ntokenizer = \"tok\"",
            &format!("base = \"{}\"", root().join("models/minilm").display()),
        );
        std::fs::write(self.path("reward.toml"), config).unwrap();
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

    /// `rlhf reward train --config reward.toml --set …`
    fn train(&self, sets: &[&str], extra: &[&str]) -> Output {
        let mut args = vec!["reward", "train", "--config", "reward.toml"];
        for set in sets {
            args.extend(["--set", set]);
        }
        args.extend(extra);
        self.run(&args)
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path(name)).unwrap()).unwrap()
    }

    /// `rlhf reward eval --json` on `data`.
    fn eval(&self, model: &str, data: &str) -> Value {
        let out = self.run(&["reward", "eval", "--model", model, "--data", data, "--json"]);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `rlhf reward score` and `transformers` on the same (prompt, response) rows.
    fn assert_transformers_agrees(&self, model: &str) {
        let rows: Vec<Value> = preferences(6, 2)
            .iter()
            .filter_map(|r| r.get("prompt").zip(r.get("chosen").or(r.get("responses"))))
            .map(|(p, answer)| {
                let answer = answer.as_array().map_or(answer, |a| &a[0]);
                json!({"prompt": p, "response": answer})
            })
            .collect();
        self.write_jsonl("score.jsonl", &rows);
        let out = self.run(&["reward", "score", "--model", model, "--data", "score.jsonl"]);
        assert_ok(&out);
        let ours: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["score"].as_f64().unwrap())
            .collect();
        let script = root().join("scripts/fixtures/hf_classify.py");
        let out = Command::new(python())
            .arg(script)
            .args([self.path(model), self.path("score.jsonl")])
            .output()
            .unwrap();
        assert_ok(&out);
        let logits: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
        let theirs: Vec<f64> = logits.iter().map(|row| row[0]).collect();
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert!((a - b).abs() < 1e-4, "{model}: rlhf {ours:?} vs transformers {theirs:?}");
        }
    }
}

#[test]
fn a_tiny_reward_model_learns_the_preference_and_transformers_reads_the_same_scores() {
    let ws = Workspace::new();
    let out = ws.train(&[], &[]);
    assert_ok(&out);
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "reward_stats.json",
        "rlhf.json",
        "metrics.jsonl",
        "state/optimizer.safetensors",
    ] {
        assert!(ws.path("runs/rm").join(file).is_file(), "missing {file}");
    }
    let config = ws.json("runs/rm/config.json");
    assert_eq!(config["architectures"][0], "GPT2ForSequenceClassification");
    assert_eq!(config["num_labels"], 1);

    let report = ws.eval("runs/rm", "valid.jsonl");
    println!("held-out comparisons: {report}");
    assert!(report["accuracy"].as_f64().unwrap() >= 0.95, "{report}");
    assert!(report["mean_margin"].as_f64().unwrap() > 0.5, "{report}");
    // 40 rows: 10 rankings of 3 (3 pairs each) and 30 pairs.
    assert_eq!((report["comparisons"].as_u64(), report["pairs"].as_u64()), (Some(40), Some(60)));

    // The centring term keeps rewards near zero mean; their spread is saved for PPO.
    let stats = ws.json("runs/rm/reward_stats.json");
    assert!(stats["mean"].as_f64().unwrap().abs() < 1.0, "{stats}");
    assert!(stats["std"].as_f64().unwrap() > 0.1, "{stats}");
    assert_eq!(stats["count"], 160 * 2 + 40); // 40 rankings of 3, 120 pairs
    let lineage = ws.json("runs/rm/rlhf.json");
    assert_eq!(lineage["stage"], "reward");
    assert!(lineage["metrics"]["valid_accuracy"].as_f64().unwrap() >= 0.95);
    assert!(stderr(&out).contains("valid accuracy"), "{}", stderr(&out));

    ws.assert_transformers_agrees("runs/rm");

    // Comparison rows get one score per response, best first.
    let out = ws.run(&["reward", "score", "--model", "runs/rm", "--data", "valid.jsonl"]);
    assert_ok(&out);
    let first: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let scores = first["scores"].as_array().unwrap();
    assert!(scores[0].as_f64() > scores[1].as_f64(), "{first}");
}

#[test]
fn an_sft_model_with_the_hh_template_becomes_a_reward_model() {
    let ws = Workspace::new();
    let sft = r#"
[model]
init = "tiny"
tokenizer = "tok"
[data]
train = "sft.jsonl"
template = "hh"
max_len = 96
[train]
max_steps = 3
[output]
dir = "runs/sft"
"#;
    std::fs::write(ws.path("sft.toml"), sft).unwrap();
    let rows: Vec<Value> = preferences(8, 0)
        .iter()
        .filter_map(|r| Some(json!({"prompt": r.get("prompt")?, "completion": r.get("chosen")?})))
        .collect();
    ws.write_jsonl("sft.jsonl", &rows);
    assert_ok(&ws.run(&["sft", "train", "--config", "sft.toml"]));

    let config = std::fs::read_to_string(ws.path("reward.toml"))
        .unwrap()
        .replace("init = \"tiny\"\ntokenizer = \"tok\"", "base = \"runs/sft\"");
    std::fs::write(ws.path("reward.toml"), config).unwrap();
    assert_ok(&ws.train(&["train.max_steps=20"], &[]));
    let lineage = ws.json("runs/rm/rlhf.json");
    assert_eq!(lineage["parent"]["path"], "runs/sft");
    let template = std::fs::read_to_string(ws.path("runs/rm/chat_template.jinja")).unwrap();
    assert!(template.contains("Human: "), "the SFT model's template travels with the RM");
    // HH answers end with eos = pad: both read the score at the last token before it.
    ws.assert_transformers_agrees("runs/rm");
    assert!(ws.eval("runs/rm", "valid.jsonl")["accuracy"].as_f64().unwrap() > 0.5);
}

#[test]
fn a_minilm_cross_encoder_trains_and_transformers_reads_the_same_scores() {
    let ws = Workspace::new();
    ws.start_from_minilm();
    let out = ws.train(&["train.max_steps=12", "train.batch_size=4", "train.lr=5e-5"], &[]);
    assert_ok(&out);
    let config = ws.json("runs/rm/config.json");
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["num_labels"], 1);
    ws.assert_transformers_agrees("runs/rm");

    let out = ws.train(&["data.template=hh", "output.overwrite=true"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("applies to decoder backbones"), "{}", stderr(&out));
}

#[test]
fn mean_pooling_is_saved_and_transformers_reads_it_the_documented_way() {
    let ws = Workspace::new();
    let out = ws.train(&["model.pooling=mean"], &[]);
    assert_eq!(out.status.code(), Some(2), "a decoder has no pooling to choose");
    assert!(stderr(&out).contains("applies to BERT-family encoders"), "{}", stderr(&out));

    ws.start_from_minilm();
    let sets = ["model.pooling=mean", "train.max_steps=4", "train.batch_size=4", "train.lr=5e-5"];
    assert_ok(&ws.train(&sets, &[]));
    assert_eq!(ws.json("runs/rm/config.json")["classifier_pooling"], "mean");
    ws.assert_transformers_agrees("runs/rm");
}

#[test]
fn train_layers_trains_only_the_top_of_a_minilm_cross_encoder() {
    let ws = Workspace::new();
    ws.start_from_minilm();
    let sets = ["model.train_layers=2", "train.max_steps=2", "train.batch_size=4"];
    assert_ok(&ws.train(&sets, &[]));
    let before = read(&root().join("models/minilm/model.safetensors"));
    let after = read(&ws.path("runs/rm/model.safetensors"));
    let tensor = |name: &str| floats(&after[&format!("bert.{name}")]);
    // MiniLM has six layers: the embeddings and layers 0–3 stay, layers 4–5 and the pooler train.
    for name in ["embeddings.word_embeddings.weight", "encoder.layer.3.output.dense.weight"] {
        assert_eq!(tensor(name), floats(&before[name]), "{name} changed");
    }
    for name in ["encoder.layer.5.output.dense.weight", "pooler.dense.weight"] {
        assert_ne!(tensor(name), floats(&before[name]), "{name} did not train");
    }
}

#[test]
fn a_decoder_trained_on_its_top_block_runs_the_frozen_one_once_and_resumes_exactly() {
    let ws = Workspace::new();
    let sets = ["model.train_layers=1", "train.max_steps=60", "train.eval_every=30"];
    let out = ws.train(&[&sets[..], &["output.dir=runs/straight"]].concat(), &[]);
    assert_ok(&out);
    assert!(stderr(&out).contains("frozen blocks (1 of 2) run once over"), "{}", stderr(&out));
    let weights = read(&ws.path("runs/straight/model.safetensors"));
    let fresh = ws.json("runs/straight/rlhf.json");
    assert!(fresh["metrics"]["valid_accuracy"].as_f64().unwrap() >= 0.9, "{fresh}");
    // The run starts from a random `tiny`: its embeddings and block 0 are what the seed drew,
    // so a second run from the same seed with every block trained shares them at step 0 only.
    assert_ok(&ws.train(&["train.max_steps=1", "train.lr=1e-9", "output.dir=runs/start"], &[]));
    let start = read(&ws.path("runs/start/model.safetensors"));
    for name in ["transformer.wte.weight", "transformer.h.0.mlp.c_fc.weight"] {
        let moved = max_abs_diff(&floats(&weights[name]), &floats(&start[name]), |_| true);
        assert!(moved < 1e-6, "{name} is frozen but moved {moved}");
    }
    let name = "transformer.h.1.mlp.c_fc.weight";
    assert!(max_abs_diff(&floats(&weights[name]), &floats(&start[name]), |_| true) > 1e-3);
    ws.assert_transformers_agrees("runs/straight");

    let mut args = vec!["reward", "train", "--config", "reward.toml"];
    for set in sets.iter().chain(&["output.dir=runs/stopped"]) {
        args.extend(["--set", set]);
    }
    let (status, seen) = interrupt_at(ws.command(&args), "step 20/");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert_ok(&ws.train(&[&sets[..], &["output.dir=runs/stopped"]].concat(), &["--resume"]));
    assert_same_weights(&ws, "runs/straight/model.safetensors", "runs/stopped/model.safetensors");
}

/// Every tensor of two checkpoints within 1e-6.
fn assert_same_weights(ws: &Workspace, a: &str, b: &str) {
    let (a, b) = (read(&ws.path(a)), read(&ws.path(b)));
    for (name, expected) in &a {
        let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
        assert!(diff <= 1e-6, "{name}: differs by {diff}");
    }
}

/// The validation accuracies a run recorded, by step (the first record of each step).
fn valid_accuracies(ws: &Workspace, run: &str) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(ws.path(&format!("{run}/metrics.jsonl"))).unwrap();
    let mut seen = Vec::<(u64, f64)>::new();
    for line in text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()) {
        if let (Some(step), Some(acc)) = (line["step"].as_u64(), line["valid_accuracy"].as_f64()) {
            if seen.last().is_none_or(|(s, _)| *s != step) {
                seen.push((step, acc));
            }
        }
    }
    seen
}

#[test]
fn keep_best_saves_the_best_validation_step_and_patience_ends_the_run() {
    let ws = Workspace::new();
    // A constant rate, so the first K steps of a long run are a K-step run.
    let sets = [
        "train.max_steps=400",
        "train.eval_every=5",
        "train.schedule=constant",
        "train.warmup_steps=0",
        "train.keep_best=true",
        "train.patience=3",
        "output.dir=runs/best",
    ];
    let config = std::fs::read_to_string(ws.path("reward.toml")).unwrap();
    std::fs::write(ws.path("novalid.toml"), config.replace("valid = \"valid.jsonl\"\n", ""))
        .unwrap();
    let out =
        ws.run(&["reward", "train", "--config", "novalid.toml", "--set", "train.keep_best=true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("need validation data"), "{}", stderr(&out));
    assert!(!ws.path("runs/rm").exists());

    let out = ws.train(&sets, &[]);
    assert_ok(&out);
    let accuracies = valid_accuracies(&ws, "runs/best");
    let (mut best_step, mut best) = (0, -1.0);
    for &(step, accuracy) in &accuracies {
        if accuracy > best {
            (best_step, best) = (step, accuracy);
        }
    }
    let stopped = accuracies.last().unwrap().0;
    assert_eq!(stopped, best_step + 15, "three evaluations without a better one: {accuracies:?}");
    assert!(stderr(&out).contains(&format!("stopping at step {stopped}")), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("keeping the weights of step {best_step}")));
    let lineage = ws.json("runs/best/rlhf.json");
    assert_eq!(lineage["metrics"]["valid_accuracy"].as_f64(), Some(best));
    assert_eq!(ws.eval("runs/best", "valid.jsonl")["accuracy"].as_f64(), Some(best));

    // The saved weights are those of a run that stopped at the best step.
    let plain = [format!("train.max_steps={best_step}"), "output.dir=runs/plain".into()];
    let plain_sets: Vec<&str> =
        sets[1..4].iter().copied().chain(plain.iter().map(String::as_str)).collect();
    assert_ok(&ws.train(&plain_sets, &[]));
    assert_same_weights(&ws, "runs/best/model.safetensors", "runs/plain/model.safetensors");

    // A run ended by patience stays ended; one interrupted and resumed ends the same.
    let out = ws.train(&sets, &["--resume"]);
    assert_ok(&out);
    assert!(stderr(&out).contains(&format!("already has all {stopped} steps")), "{}", stderr(&out));
    let mut args = vec!["reward", "train", "--config", "reward.toml"];
    for set in
        sets.iter().chain(&["output.dir=runs/stopped", "train.save_every=5", "train.log_every=1"])
    {
        args.extend(["--set", set]);
    }
    let at = format!("step {}/", best_step + 2);
    let (status, seen) = interrupt_at(ws.command(&args), &at);
    assert_eq!(status.code(), Some(130), "{seen}");
    let resumed: Vec<&str> = sets.iter().copied().chain(["output.dir=runs/stopped"]).collect();
    assert_ok(&ws.train(&resumed, &["--resume"]));
    assert_same_weights(&ws, "runs/best/model.safetensors", "runs/stopped/model.safetensors");
}

#[test]
fn the_head_and_each_layer_train_at_their_own_learning_rate() {
    let ws = Workspace::new();
    ws.start_from_minilm();
    // Adam's first step moves a weight by lr·g/(|g| + ε): by its learning rate, whatever g.
    let sets = [
        "train.max_steps=1",
        "train.batch_size=4",
        "train.warmup_steps=0",
        "train.weight_decay=0",
        "train.lr=1e-3",
        "train.head_lr=1e-2",
        "train.layer_lr_decay=0.5",
        "loss.label_smoothing=0.1",
    ];
    assert_ok(&ws.train(&sets, &[]));
    let before = read(&root().join("models/minilm/model.safetensors"));
    let after = read(&ws.path("runs/rm/model.safetensors"));
    let step = |name: &str| {
        let old = before.get(name).map(floats).unwrap_or_else(|| vec![0.0; 1]);
        max_abs_diff(&floats(&after[&format!("bert.{name}")]), &old, |_| true)
    };
    let expected = [
        ("embeddings.word_embeddings.weight", 1e-3 * 0.5f32.powi(6)),
        ("encoder.layer.0.output.dense.weight", 1e-3 * 0.5f32.powi(5)),
        ("encoder.layer.4.output.dense.weight", 1e-3 * 0.5),
        ("encoder.layer.5.output.dense.weight", 1e-3),
        ("pooler.dense.weight", 1e-3),
    ];
    for (name, lr) in expected {
        let moved = step(name);
        assert!((moved - lr).abs() < 0.01 * lr, "{name}: moved {moved}, lr {lr}");
    }
    // The fresh head starts from the same draw (seeded) in both runs: 1e-2 against 2e-2.
    let faster = [&sets[..], &["train.head_lr=2e-2", "output.dir=runs/faster"]].concat();
    assert_ok(&ws.train(&faster, &[]));
    let faster = read(&ws.path("runs/faster/model.safetensors"));
    let gap = max_abs_diff(
        &floats(&after["classifier.weight"]),
        &floats(&faster["classifier.weight"]),
        |_| true,
    );
    assert!((gap - 1e-2).abs() < 1e-4, "head steps differ by {gap}");
}

#[test]
fn reinit_layers_draws_the_top_layer_and_the_pooler_afresh() {
    let ws = Workspace::new();
    ws.start_from_minilm();
    let out = ws.train(&["model.reinit_layers=2", "model.train_layers=1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`model.reinit_layers` = 2 exceeds"), "{}", stderr(&out));

    let sets =
        ["model.reinit_layers=1", "train.max_steps=1", "train.lr=1e-7", "train.batch_size=4"];
    assert_ok(&ws.train(&sets, &[]));
    let before = read(&root().join("models/minilm/model.safetensors"));
    let after = read(&ws.path("runs/rm/model.safetensors"));
    let tensor = |name: &str| floats(&after[&format!("bert.{name}")]);
    let std = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    // Layer 5 and the pooler: N(0, 0.02) matrices, unit gains, zero biases (one tiny step on).
    for name in ["encoder.layer.5.intermediate.dense.weight", "pooler.dense.weight"] {
        let s = std(&tensor(name));
        assert!((s - 0.02).abs() < 0.001, "{name}: std {s}");
    }
    assert!(
        tensor("encoder.layer.5.output.LayerNorm.weight").iter().all(|g| (g - 1.0).abs() < 1e-5)
    );
    assert!(tensor("encoder.layer.5.output.dense.bias").iter().all(|b| b.abs() < 1e-5));
    // Layer 4 keeps its pretrained weights (up to the one step).
    let name = "encoder.layer.4.intermediate.dense.weight";
    let moved = max_abs_diff(&tensor(name), &floats(&before[name]), |_| true);
    assert!(moved < 1e-5, "{name} moved {moved}");
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resuming_matches_an_uninterrupted_run() {
    let ws = Workspace::new();
    let sets = ["train.max_steps=200", "train.eval_every=0"];
    assert_ok(&ws.train(&[&sets[..], &["output.dir=runs/straight"]].concat(), &[]));

    let mut args = vec!["reward", "train", "--config", "reward.toml"];
    for set in sets.iter().chain(&["output.dir=runs/stopped"]) {
        args.extend(["--set", set]);
    }
    let (status, seen) = interrupt_at(ws.command(&args), "step 10/");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("--resume"), "{seen}");
    assert!(ws.path("runs/stopped/state/trainer.json").is_file());
    assert!(!ws.path("runs/stopped/reward_stats.json").exists(), "statistics come with the end");

    assert_ok(&ws.train(&[&sets[..], &["output.dir=runs/stopped"]].concat(), &["--resume"]));
    let a = read(&ws.path("runs/straight/model.safetensors"));
    let b = read(&ws.path("runs/stopped/model.safetensors"));
    for (name, expected) in &a {
        let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
        assert!(diff <= 1e-6, "{name}: resumed run differs by {diff}");
    }
    assert_eq!(
        ws.json("runs/stopped/reward_stats.json"),
        ws.json("runs/straight/reward_stats.json")
    );
}

#[test]
fn bad_comparisons_name_file_line_and_field_and_write_nothing() {
    let ws = Workspace::new();
    let good = std::fs::read_to_string(ws.path("prefs.jsonl")).unwrap();
    let cases = [
        ("{\"prompt\": \"q\", \"chosen\": \"a\"}", "bad.jsonl:2: field `rejected` is missing"),
        (
            "{\"prompt\": \"q\", \"responses\": [\"a\"]}",
            "bad.jsonl:2: field `responses` must rank at least two",
        ),
        (
            "{\"chosen\": \"\\n\\nHuman: a\", \"rejected\": \"\\n\\nHuman: b\"}",
            "bad.jsonl:2: fields `chosen` and `rejected` share no `\\n\\nAssistant:` turn",
        ),
        (
            "{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\", \"margin\": \"big\"}",
            "bad.jsonl:2: field `margin` must be a number",
        ),
        ("[1, 2]", "bad.jsonl:2: expected a JSON object"),
    ];
    for (bad_line, expected) in cases {
        let lines: Vec<&str> = good.lines().take(1).chain([bad_line]).collect();
        std::fs::write(ws.path("bad.jsonl"), lines.join("\n")).unwrap();
        let out = ws.train(&["data.train=bad.jsonl"], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad_line}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "expected `{expected}` in:\n{}", stderr(&out));
        assert!(!ws.path("runs").exists(), "an output directory was created");
    }
    let out = ws.train(&["loss.center_coefficient=-1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("loss.center_coefficient"), "{}", stderr(&out));
    let out = ws.run(&["reward", "eval", "--model", "tok", "--data", "valid.jsonl"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!ws.path("runs").exists());
}

/// Issue 49: `reward eval` and `reward score` read whole transcripts while training saw only
/// `data.max_len` tokens of each. They now read at the trained length, say which, count what
/// they cut, and `--max-len` changes it (0: the whole context window).
#[test]
fn eval_and_score_read_at_the_trained_length_unless_told_otherwise() {
    let ws = Workspace::new();
    let sets = ["data.max_len=48", "train.max_steps=4", "train.eval_every=0"];
    assert_ok(&ws.train(&sets, &[]));
    // Prompts with a long preamble: longer than 48 tokens, short of the 256-token window.
    let preamble = "Sure, happy to help. Here is a clear and friendly answer. ".repeat(3);
    let long: Vec<Value> = TOPICS
        .iter()
        .map(|t| {
            let prompt = format!("{preamble}Can you tell me about {t}?");
            json!({"prompt": prompt, "chosen": format!("Of course, {t}."), "rejected": "No."})
        })
        .collect();
    ws.write_jsonl("long.jsonl", &long);
    let eval = |extra: &[&str]| -> Value {
        let args =
            [&["reward", "eval", "--model", "runs/rm", "--data", "long.jsonl", "--json"], extra];
        let out = ws.run(&args.concat());
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let trained = eval(&[]);
    assert_eq!(
        (trained["max_len"].as_u64(), trained["max_len_from"].as_str()),
        (Some(48), Some("trained"))
    );
    assert_eq!(
        (trained["truncated"].as_u64(), trained["dropped"].as_u64()),
        (Some(8), Some(0)),
        "{trained}"
    );
    let longer = eval(&["--max-len", "200"]);
    assert_eq!(
        (longer["max_len"].as_u64(), longer["max_len_from"].as_str()),
        (Some(200), Some("--max-len"))
    );
    assert_eq!(longer["truncated"], 0, "{longer}");
    assert_eq!(eval(&["--max-len", "0"])["max_len"], 256);
    let out = ws.run(&["reward", "eval", "--model", "runs/rm", "--data", "long.jsonl"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("length       48 tokens (trained at; --max-len to change)"), "{text}");
    assert!(text.contains("truncated    8 comparison(s)"), "{text}");
    let out = ws.run(&[
        "reward",
        "eval",
        "--model",
        "runs/rm",
        "--data",
        "long.jsonl",
        "--max-len",
        "999",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("exceeds the model's context window of 256"), "{}", stderr(&out));

    // score: the same length, each cut row marked; the scores depend on what was read.
    let score = |extra: &[&str]| -> (Vec<Value>, String) {
        let args = [&["reward", "score", "--model", "runs/rm", "--data", "long.jsonl"], extra];
        let out = ws.run(&args.concat());
        assert_ok(&out);
        let rows = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (rows, stderr(&out))
    };
    let (cut, said) = score(&[]);
    assert!(
        said.contains("length 48 tokens (trained at; --max-len to change); 16 of 16 responses"),
        "{said}"
    );
    assert!(cut.iter().all(|row| row["truncated"] == true), "{cut:?}");
    let (whole, said) = score(&["--max-len", "0"]);
    assert!(
        said.contains(
            "length 256 tokens (--max-len 0: the whole context window; trained at 48); 0 of 16"
        ),
        "{said}"
    );
    assert!(whole.iter().all(|row| row.get("truncated").is_none()), "{whole:?}");
    assert_ne!(cut[0]["scores"], whole[0]["scores"]);

    // A model with no record of its training (imported) is read at its context window.
    std::fs::create_dir(ws.path("imported")).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        let from = ws.path("runs/rm").join(file);
        if from.is_file() {
            std::fs::copy(from, ws.path("imported").join(file)).unwrap();
        }
    }
    let out = ws.run(&["reward", "eval", "--model", "imported", "--data", "long.jsonl", "--json"]);
    assert_ok(&out);
    let imported: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (imported["max_len"].as_u64(), imported["max_len_from"].as_str()),
        (Some(256), Some("window"))
    );
    assert_eq!(imported["accuracy"], eval(&["--max-len", "0"])["accuracy"]);
}
