//! `rlhf dpo` and `rlhf kto` end to end on tiny models: learning from every preference form,
//! `dpo eval` against what validation logged, each loss type's value at the start, resuming
//! after Ctrl-C without recomputing the reference, bad input, and one step of TRL's
//! `DPOTrainer` / `KTOTrainer` reproduced (when TRL's venv is there: `scripts/bench/trl_venv.sh`).

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

fn pick(list: &[&str], i: usize, t: &str) -> String {
    list[i % list.len()].replace("{t}", t)
}

/// `n` comparisons in every form DPO reads, kind beating neutral beating rude; `seed` varies
/// the combinations so a validation file differs from the training file.
fn preferences(n: usize, seed: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let j = i * 7 + seed * 13;
            let t = TOPICS[(j / 3) % TOPICS.len()];
            let prompt = format!("Can you tell me about {t}?");
            let (kind, rude) = (pick(&KIND, j, t), pick(&RUDE, j / 2, t));
            let user = json!([{"role": "user", "content": prompt}]);
            let answer = |text: &str| json!([{"role": "assistant", "content": text}]);
            let turn = |text: &str| {
                json!([{"role": "user", "content": prompt}, {"role": "assistant", "content": text}])
            };
            match i % 5 {
                // TRL's standard and conversational forms.
                0 => json!({"prompt": prompt, "chosen": kind, "rejected": rude}),
                1 => json!({"prompt": user, "chosen": answer(&kind), "rejected": answer(&rude)}),
                2 => json!({
                    "chosen": format!("\n\nHuman: {prompt}\n\nAssistant: {kind}"),
                    "rejected": format!("\n\nHuman: {prompt}\n\nAssistant: {rude}"),
                }),
                3 => json!({"prompt": prompt, "responses": [kind, pick(&NEUTRAL, j, t), rude]}),
                _ => json!({"chosen": turn(&kind), "rejected": turn(&rude)}),
            }
        })
        .collect()
}

/// `n` KTO rows, TRL's unpaired form as strings and as message lists, good and bad answers
/// alternating.
fn thumbs(n: usize, seed: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let j = i * 5 + seed * 11;
            let t = TOPICS[(j / 2) % TOPICS.len()];
            let prompt = format!("Can you tell me about {t}?");
            let (label, answer) = match i % 2 {
                0 => (true, pick(&KIND, j, t)),
                _ => (false, pick(&RUDE, j, t)),
            };
            match (i / 2) % 2 {
                0 => json!({"prompt": prompt, "completion": answer, "label": label}),
                _ => json!({
                    "prompt": [{"role": "user", "content": prompt}],
                    "completion": [{"role": "assistant", "content": answer}],
                    "label": label,
                }),
            }
        })
        .collect()
}

const DPO_TOML: &str = r#"
[model]
base = "base"
[data]
train = "prefs.jsonl"
valid = "valid.jsonl"
max_len = 96
[train]
max_steps = 40
batch_size = 8
lr = 1e-3
warmup_steps = 0
eval_every = 20
save_every = 0
log_every = 1
[output]
dir = "runs/dpo"
"#;

/// A temporary directory with comparisons and KTO rows, a tokenizer trained on them, a `tiny`
/// model to start from and configs for both stages.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let ws = Self { dir: tempfile::tempdir().unwrap() };
        write_jsonl(&ws.path("prefs.jsonl"), &preferences(160, 0));
        write_jsonl(&ws.path("valid.jsonl"), &preferences(40, 1));
        write_jsonl(&ws.path("kto.jsonl"), &thumbs(160, 0));
        write_jsonl(&ws.path("kto.valid.jsonl"), &thumbs(40, 1));
        let tokenizer = ["tokenizer", "train", "--data", "prefs.jsonl", "--vocab-size", "400"];
        assert_ok(&ws.run(&[&tokenizer[..], &["--out", "tok"]].concat()));
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
        std::fs::write(ws.path("dpo.toml"), DPO_TOML).unwrap();
        let kto = DPO_TOML
            .replace("prefs.jsonl", "kto.jsonl")
            .replace("valid.jsonl", "kto.valid.jsonl")
            .replace("runs/dpo", "runs/kto");
        std::fs::write(ws.path("kto.toml"), kto).unwrap();
        ws
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        rlhf_in(self.dir.path(), args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `rlhf STAGE train --config STAGE.toml --set …`
    fn train_args(stage: &str, sets: &[&str], extra: &[&str]) -> Vec<String> {
        let config = format!("{stage}.toml");
        let mut args: Vec<String> =
            [stage, "train", "--config", &config].map(String::from).to_vec();
        for set in sets {
            args.extend(["--set".to_string(), set.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn train(&self, stage: &str, sets: &[&str], extra: &[&str]) -> Output {
        let args = Self::train_args(stage, sets, extra);
        self.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn metrics(&self, run: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path(run).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path(name)).unwrap()).unwrap()
    }

    /// `rlhf dpo eval --json` with `extra` arguments.
    fn eval(&self, model: &str, data: &str, extra: &[&str]) -> Value {
        let args =
            [&["dpo", "eval", "--model", model, "--data", data, "--json"][..], extra].concat();
        let out = self.run(&args);
        assert_ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The training records (those with a loss), in order.
fn steps(metrics: &[Value]) -> Vec<&Value> {
    metrics.iter().filter(|m| m["loss"].is_number()).collect()
}

fn number(record: &Value, key: &str) -> f64 {
    record[key].as_f64().unwrap_or_else(|| panic!("no `{key}` in {record}"))
}

fn assert_near(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!((got - want).abs() <= tolerance, "{what}: {got} vs {want}");
}

#[test]
fn dpo_learns_every_preference_form_and_eval_reports_what_validation_logged() {
    let ws = Workspace::new();
    let out = ws.train("dpo", &[], &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("dpo: 160 comparisons (224 pairs; 40 for validation)"),
        "{}",
        stderr(&out)
    );
    let run = ws.path("runs/dpo");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "rlhf.json",
        "state/reference_logps.safetensors",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    let metrics = ws.metrics("runs/dpo");
    let steps = steps(&metrics);
    // Step 1 compares the policy with itself: every implicit reward is 0, the loss log 2. Only
    // to rounding: the reference's log-probs were computed in other batches, and on some CPUs
    // the kernels round a row differently with other rows beside it, so a reward may be ±1e-8
    // — which `rewards/accuracies` (strict wins) counts as a win.
    assert_near(number(steps[0], "loss"), std::f64::consts::LN_2, 1e-5, "first loss");
    assert_near(number(steps[0], "rewards/margins"), 0.0, 1e-5, "first margin");
    let last = steps[steps.len() - 1];
    assert!(number(last, "rewards/accuracies") >= 0.9, "{last}");
    assert!(number(last, "rewards/margins") > 0.5, "{last}");
    assert!(number(last, "loss") < 0.3, "{last}");
    let valid: Vec<&Value> = metrics.iter().filter(|m| m["valid_loss"].is_number()).collect();
    assert_eq!(valid.len(), 2, "validation at steps 20 and 40");
    let final_valid = valid[1];
    assert!(number(final_valid, "valid_rewards/accuracies") >= 0.9, "{final_valid}");
    let lineage = ws.json("runs/dpo/rlhf.json");
    assert_eq!(
        (lineage["stage"].as_str(), lineage["parent"]["path"].as_str()),
        (Some("dpo"), Some("base"))
    );

    // `dpo eval` on the validation file (its reference found in rlhf.json) gives the numbers
    // validation logged at the last step.
    let report = ws.eval("runs/dpo", "valid.jsonl", &[]);
    for key in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ] {
        let logged = number(final_valid, &format!("valid_{key}"));
        assert_near(number(&report, key), logged, 1e-5 * logged.abs().max(1.0), key);
    }
    assert_eq!((report["comparisons"].as_u64(), report["pairs"].as_u64()), (Some(40), Some(56)));
    assert_eq!(report["reference"], "base");
    // Read at the length it was trained at, unless told otherwise.
    assert_eq!(
        (report["max_len"].as_u64(), report["max_len_from"].as_str()),
        (Some(96), Some("trained"))
    );
    let args = ["dpo", "eval", "--model", "runs/dpo", "--data", "valid.jsonl", "--max-len", "12"];
    let short = ws.run(&args);
    assert_eq!(short.status.code(), Some(2), "{}", stderr(&short));
    assert!(
        stderr(&short).contains("no comparison fits in 12 tokens (--max-len; trained at 96)"),
        "{}",
        stderr(&short)
    );
    // A model against itself: no preference at all.
    let same = ws.eval("base", "valid.jsonl", &["--reference", "base"]);
    assert_eq!((number(&same, "rewards/accuracies"), number(&same, "rewards/margins")), (0.0, 0.0));
    assert_near(
        number(&same, "loss"),
        std::f64::consts::LN_2,
        1e-6,
        "loss of a model against itself",
    );
    let text = ws.run(&["dpo", "eval", "--model", "runs/dpo", "--data", "valid.jsonl"]);
    assert_ok(&text);
    assert!(String::from_utf8_lossy(&text.stdout).contains("reward accuracy"));

    // The checkpoint is an ordinary causal LM directory.
    write_jsonl(&ws.path("prompts.jsonl"), &[json!({"prompt": "Can you tell me about cats?"})]);
    let generated = ws.run(&[
        "generate",
        "--model",
        "runs/dpo",
        "--data",
        "prompts.jsonl",
        "--max-new-tokens",
        "4",
    ]);
    assert_ok(&generated);
}

#[test]
fn each_loss_type_starts_at_its_value_for_no_preference_and_a_reference_can_be_named() {
    let ws = Workspace::new();
    // At step 1 the policy is the reference, so Δ = 0 for every pair.
    let ln2 = std::f64::consts::LN_2;
    let cases =
        [("sigmoid", 0.0, ln2), ("ipo", 0.0, 25.0), ("hinge", 0.0, 1.0), ("robust", 0.1, ln2)];
    for (loss_type, smoothing, start) in cases {
        let out_dir = format!("output.dir=runs/{loss_type}");
        let sets = [
            &format!("dpo.loss_type=\"{loss_type}\""),
            &format!("dpo.label_smoothing={smoothing}"),
            "train.max_steps=3",
            out_dir.as_str(),
        ];
        assert_ok(&ws.train("dpo", &sets, &[]));
        let metrics = ws.metrics(&format!("runs/{loss_type}"));
        assert_near(number(steps(&metrics)[0], "loss"), start, 1e-5, loss_type);
        assert_eq!(
            ws.json(&format!("runs/{loss_type}/rlhf.json"))["config"]["config"]["dpo"]["loss_type"],
            loss_type
        );
    }

    // Another reference: the implicit rewards differ from 0 from the first step, and the
    // lineage names it.
    assert_ok(&ws.run(&[
        "model",
        "init",
        "--preset",
        "tiny",
        "--tokenizer",
        "tok",
        "--out",
        "other",
        "--seed",
        "1",
    ]));
    let sets = ["model.reference=\"other\"", "train.max_steps=1", "output.dir=runs/other"];
    assert_ok(&ws.train("dpo", &sets, &[]));
    let metrics = ws.metrics("runs/other");
    assert!(number(steps(&metrics)[0], "rewards/chosen").abs() > 1e-3, "{}", steps(&metrics)[0]);
    let lineage = ws.json("runs/other/rlhf.json");
    assert_eq!(lineage["config"]["reference"]["path"], "other");
    assert_eq!(ws.eval("runs/other", "valid.jsonl", &[])["reference"], "other");
}

/// A run interrupted by Ctrl-C and resumed ends with the weights and metrics of one that was
/// not, and reads the reference log-probabilities back instead of computing them again.
/// `extra` adds to the runs' overrides (`model.train_layers`: the frozen-block cache).
fn resumes_exactly(stage: &str, extra: &[&str]) {
    let ws = Workspace::new();
    let sets =
        [&["train.max_steps=120", "train.eval_every=0", "train.log_every=5"], extra].concat();
    let straight = format!("output.dir=runs/{stage}-straight");
    assert_ok(&ws.train(stage, &[&sets[..], &[straight.as_str()]].concat(), &[]));

    let stopped = format!("output.dir=runs/{stage}-stopped");
    let sets = [&sets[..], &[stopped.as_str()]].concat();
    let args = Workspace::train_args(stage, &sets, &[]);
    let command = ws.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let (status, seen) = interrupt_at(command, "step 10/");
    assert_eq!(status.code(), Some(130), "{seen}");
    let state = ws.path(&format!("runs/{stage}-stopped/state"));
    assert!(state.join("reference_logps.safetensors").is_file(), "{seen}");

    let resumed = ws.train(stage, &sets, &["--resume"]);
    assert_ok(&resumed);
    if !extra.is_empty() {
        // The cache is built again; the reference is read back.
        assert!(stderr(&resumed).contains("the frozen blocks (1 of 2)"), "{}", stderr(&resumed));
    }
    assert!(!stderr(&resumed).contains("reference log-probabilities of"), "{}", stderr(&resumed));
    let a = read(&ws.path(&format!("runs/{stage}-straight/model.safetensors")));
    let b = read(&ws.path(&format!("runs/{stage}-stopped/model.safetensors")));
    for (name, expected) in &a {
        let diff = max_abs_diff(&floats(&b[name]), &floats(expected), |_| true);
        assert!(diff <= 1e-6, "{name}: resumed run differs by {diff}");
    }
    let logged = |run: &str| -> Vec<(u64, f64)> {
        ws.metrics(run)
            .iter()
            .filter_map(|m| Some((m["step"].as_u64()?, m["loss"].as_f64()?)))
            .collect()
    };
    let (a, b) =
        (logged(&format!("runs/{stage}-straight")), logged(&format!("runs/{stage}-stopped")));
    assert_eq!(a.len(), 24);
    for ((step_a, loss_a), (step_b, loss_b)) in a.iter().zip(&b) {
        assert_eq!(step_a, step_b);
        assert_near(*loss_b, *loss_a, 1e-5, &format!("{stage} loss at step {step_a}"));
    }

    // A state without its reference log-probabilities cannot be resumed.
    std::fs::remove_file(state.join("reference_logps.safetensors")).unwrap();
    let extended = [&sets[..], &["train.max_steps=130"]].concat();
    let out = ws.train(stage, &extended, &["--resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("reference_logps.safetensors"), "{}", stderr(&out));
}

#[test]
fn dpo_resumes_exactly_after_ctrl_c() {
    resumes_exactly("dpo", &[]);
}

#[test]
fn kto_with_frozen_blocks_resumes_exactly_after_ctrl_c() {
    resumes_exactly("kto", &["model.train_layers=1"]);
}

#[test]
fn kto_learns_good_from_bad_and_its_implicit_reward_orders_comparisons() {
    let ws = Workspace::new();
    let out = ws.train("kto", &[], &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("kto: 160 rows (80 desirable, 80 undesirable; 40 for validation)"),
        "{}",
        stderr(&out)
    );
    let metrics = ws.metrics("runs/kto");
    let steps = steps(&metrics);
    // Policy = reference at step 1: z₀ = 0 and every row costs 1 − σ(0).
    assert_near(number(steps[0], "loss"), 0.5, 1e-6, "first loss");
    assert_eq!(number(steps[0], "kl"), 0.0);
    let last = steps[steps.len() - 1];
    assert!(number(last, "loss") < 0.45, "{last}");
    assert!(number(last, "rewards/margins") > 0.5, "{last}");
    let valid = metrics.iter().rev().find(|m| m["valid_loss"].is_number()).unwrap();
    assert!(number(valid, "valid_rewards/margins") > 0.5, "{valid}");
    assert!(valid["valid_kl"].is_number(), "{valid}");
    assert_eq!(ws.json("runs/kto/rlhf.json")["stage"], "kto");
    // Trained on single answers, the policy still prefers the kind answer of each pair.
    let report = ws.eval("runs/kto", "valid.jsonl", &[]);
    assert!(number(&report, "rewards/accuracies") >= 0.9, "{report}");
}

#[test]
fn bad_rows_name_file_line_and_field_and_write_nothing() {
    let ws = Workspace::new();
    let dpo_cases = [
        (r#"{"prompt": "q", "chosen": "a"}"#, "bad.jsonl:2: field `rejected` is missing"),
        (
            r#"{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "robot", "content": "b"}]}"#,
            "bad.jsonl:2: field `rejected[0].role`: unknown role \"robot\"",
        ),
        (
            r#"{"prompt": "q", "chosen": "a", "rejected": 3}"#,
            "bad.jsonl:2: fields `chosen` and `rejected` must both be strings or both message lists",
        ),
        ("{\"prompt\": \"q\",", "bad.jsonl:2: invalid JSON"),
    ];
    let kto_cases = [
        (r#"{"prompt": "q", "completion": "a"}"#, "bad.jsonl:2: field `label` is missing"),
        (
            r#"{"prompt": "q", "completion": "a", "label": "yes"}"#,
            "bad.jsonl:2: field `label` must be true",
        ),
        (r#"{"prompt": "q", "label": true}"#, "bad.jsonl:2: field `completion` is missing"),
        (
            r#"{"prompt": "q", "responses": ["a", "b", "c"]}"#,
            "bad.jsonl:2: a ranking (`responses`) has no thumbs up or down",
        ),
    ];
    for (stage, good, cases) in
        [("dpo", "prefs.jsonl", &dpo_cases), ("kto", "kto.jsonl", &kto_cases)]
    {
        let first =
            std::fs::read_to_string(ws.path(good)).unwrap().lines().next().unwrap().to_string();
        for (bad_line, expected) in cases {
            std::fs::write(ws.path("bad.jsonl"), format!("{first}\n{bad_line}\n")).unwrap();
            let out = ws.train(stage, &["data.train=bad.jsonl"], &[]);
            assert_eq!(out.status.code(), Some(2), "{stage} {bad_line}: {}", stderr(&out));
            assert!(stderr(&out).contains(expected), "expected `{expected}` in:\n{}", stderr(&out));
            assert!(!ws.path("runs").exists(), "an output directory was created");
        }
    }
    let config_cases = [
        ("dpo", "dpo.loss_type=\"kto\"", "dpo.loss_type"),
        ("dpo", "dpo.beta=0", "key `dpo.beta` must be a positive number"),
        ("dpo", "dpo.label_smoothing=0.1", "applies to loss_type = \"robust\""),
        ("dpo", "model.reference=\"nowhere\"", "key `model.reference` = \"nowhere\""),
        ("kto", "kto.undesirable_weight=-1", "key `kto.undesirable_weight`"),
        ("kto", "train.batch_size=1", "key `train.batch_size` must be at least 2"),
    ];
    for (stage, set, expected) in config_cases {
        let out = ws.train(stage, &[set], &[]);
        assert_eq!(out.status.code(), Some(2), "{set}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "expected `{expected}` in:\n{}", stderr(&out));
    }
    // A reference with another vocabulary.
    assert_ok(&ws.run(&[
        "tokenizer",
        "train",
        "--data",
        "kto.jsonl",
        "--vocab-size",
        "300",
        "--out",
        "tok2",
    ]));
    assert_ok(&ws.run(&[
        "model",
        "init",
        "--preset",
        "tiny",
        "--tokenizer",
        "tok2",
        "--out",
        "alien",
    ]));
    let out = ws.train("dpo", &["model.reference=\"alien\""], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("tokenizer differs"), "{}", stderr(&out));
    let out = ws.run(&["dpo", "eval", "--model", "base", "--data", "valid.jsonl"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--reference"), "{}", stderr(&out));
    assert!(!ws.path("runs").exists());
}

/// Short answers keep the sequence log-probabilities small, so that f32 sums on both sides
/// agree to 1e-5 in absolute terms.
fn parity_rows() -> (Vec<Value>, Vec<Value>) {
    let qa = [
        ("Is the sea salty?", "Yes.", "No."),
        ("Do cats purr?", "Yes, often.", "Never."),
        ("Is bread baked?", "Yes.", "Go away."),
        ("Can trains fly?", "No.", "Whatever."),
    ];
    let user = |q: &str| json!([{"role": "user", "content": q}]);
    let answer = |a: &str| json!([{"role": "assistant", "content": a}]);
    let pairs = qa
        .iter()
        .map(|(q, c, r)| json!({"prompt": user(q), "chosen": answer(c), "rejected": answer(r)}))
        .collect();
    let unpaired = qa
        .iter()
        .flat_map(|(q, c, r)| {
            [
                json!({"prompt": user(q), "completion": answer(c), "label": true}),
                json!({"prompt": user(q), "completion": answer(r), "label": false}),
            ]
        })
        .collect();
    (pairs, unpaired)
}

#[test]
fn one_step_matches_trl_for_every_dpo_loss_type_and_kto() {
    let Some(python) = trl_python() else {
        eprintln!(
            "skipped: no TRL 1.12.0 venv; run scripts/bench/trl_venv.sh (a few minutes, once) to compare with TRL"
        );
        return;
    };
    let ws = Workspace::new();
    let (pairs, unpaired) = parity_rows();
    write_jsonl(&ws.path("parity.jsonl"), &pairs);
    write_jsonl(&ws.path("parity-kto.jsonl"), &unpaired);
    // Policy and reference differ (seeds 0 and 1), so rewards, z₀ and the losses are not the
    // trivial values of a model against itself; with these seeds z₀ > 0 (not clamped).
    assert_ok(&ws.run(&[
        "model",
        "init",
        "--preset",
        "tiny",
        "--tokenizer",
        "tok",
        "--out",
        "ref",
        "--seed",
        "1",
    ]));
    let lr = "1e-4";
    let cases = [
        ("dpo", "sigmoid", 0.0, "parity.jsonl", 4),
        ("dpo", "ipo", 0.0, "parity.jsonl", 4),
        ("dpo", "hinge", 0.0, "parity.jsonl", 4),
        ("dpo", "robust", 0.1, "parity.jsonl", 4),
        ("kto", "kto", 0.0, "parity-kto.jsonl", 8),
    ];
    for (stage, loss_type, smoothing, data, rows) in cases {
        let name = format!("{stage}-{loss_type}");
        let trl_out = ws.path(&format!("trl/{name}"));
        let (policy, reference) = if stage == "kto" { ("ref", "base") } else { ("base", "ref") };
        let out = Command::new(&python)
            .arg(root().join("scripts/bench/trl_dpo_step.py"))
            .args(["--trainer", stage, "--model", policy, "--reference", reference, "--data", data])
            .args(["--loss-type", loss_type, "--label-smoothing", &smoothing.to_string()])
            .args(["--lr", lr, "--out", trl_out.to_str().unwrap()])
            .current_dir(ws.dir.path())
            .output()
            .unwrap();
        assert_ok(&out);
        let trl = ws.json(&format!("trl/{name}/metrics.json"))["metrics"].clone();

        let config = format!(
            "[model]\nbase = \"{policy}\"\nreference = \"{reference}\"\n[data]\ntrain = \"{data}\"\nmax_len = 256\n\
             [{stage}]\n{loss}\n[train]\nmax_steps = 1\nbatch_size = {rows}\nlr = {lr}\nwarmup_steps = 0\n\
             schedule = \"constant\"\n[output]\ndir = \"runs/{name}\"\n",
            loss = match stage {
                "dpo" => format!("loss_type = \"{loss_type}\"\nlabel_smoothing = {smoothing}"),
                _ => String::new(),
            },
        );
        std::fs::write(ws.path(&format!("{name}.toml")), config).unwrap();
        let config_file = format!("{name}.toml");
        let out = ws.run(&[stage, "train", "--config", config_file.as_str()]);
        assert_ok(&out);
        let metrics = ws.metrics(&format!("runs/{name}"));
        let ours = steps(&metrics)[0];
        let mut keys = vec![
            "loss",
            "grad_norm",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
        ];
        match stage {
            "dpo" => keys.push("rewards/accuracies"),
            _ => {
                keys.push("kl");
                assert!(number(&trl, "kl") > 0.01, "z₀ is clamped: {trl}");
            }
        }
        for key in keys {
            let (got, want) = (number(ours, key), number(&trl, key));
            assert_near(got, want, 1e-5 * want.abs().max(1.0), &format!("{name} {key}"));
        }
        assert_eq!(number(ours, "tokens"), number(&trl, "num_tokens"), "{name}: tokens");
        let (a, b) = (
            read(&ws.path(&format!("runs/{name}/model.safetensors"))),
            read(&trl_out.join("model.safetensors")),
        );
        let start = read(&ws.path(&format!("{policy}/model.safetensors")));
        let (mut moved, mut differ) = (0f32, 0f32);
        for (tensor, ours) in &a {
            let theirs = &b[tensor];
            differ = differ.max(max_abs_diff(&floats(ours), &floats(theirs), |_| true));
            moved = moved.max(max_abs_diff(&floats(ours), &floats(&start[tensor]), |_| true));
        }
        assert!(moved > 5e-5, "{name}: the step moved the weights by only {moved}");
        assert!(differ <= 1e-5, "{name}: weights after the step differ from TRL's by {differ}");
        eprintln!(
            "{name}: loss {} (TRL {}), weights within {differ:.1e}",
            number(ours, "loss"),
            number(&trl, "loss")
        );
    }
}
