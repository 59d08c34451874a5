//! `rlhf demo` and `scripts/demo.sh --quick`: the task files, the gold judge's rankings and
//! verdicts, the judge as a reward program, bad rows refused with their line, and the whole
//! pipeline end to end on tiny models.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{assert_ok, floats, read, rlhf, root, stderr, write_jsonl};
use rlhf::grpo::program::RewardProgram;
use serde_json::{Value, json};

fn read_rows(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `rlhf demo rank --samples SAMPLES --out PREFS`
fn rank(samples: &Path, prefs: &Path) -> Output {
    rlhf(&[
        "demo",
        "rank",
        "--samples",
        samples.to_str().unwrap(),
        "--out",
        prefs.to_str().unwrap(),
    ])
}

#[test]
fn data_writes_the_split_and_rank_orders_answers_by_the_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    assert_ok(&rlhf(&["demo", "data", "--out", data.to_str().unwrap(), "--samples", "3"]));
    let train = read_rows(&data.join("prompts.train.jsonl"));
    let held_out = read_rows(&data.join("prompts.heldout.jsonl"));
    assert_eq!(read_rows(&data.join("sft.jsonl")).len(), train.len(), "a demonstration each");
    assert_eq!(read_rows(&data.join("rank.train.jsonl")).len(), 3 * train.len());
    assert!((30..60).contains(&held_out.len()), "a fifth of the questions held out");
    for row in &held_out {
        assert!(!train.contains(row), "{row} is on both sides");
    }
    let again = rlhf(&["demo", "data", "--out", data.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2), "an existing directory is kept without --force");

    let samples = tmp.path().join("samples.jsonl");
    let prompt = "What is the capital of France? Answer in one word.";
    write_jsonl(
        &samples,
        &[
            json!({"prompt": prompt, "completion": "The capital of France is Paris."}),
            json!({"prompt": prompt, "completion": "Paris"}),
            json!({"prompt": prompt, "completion": "Paris, France, Europe, Earth"}),
        ],
    );
    let prefs = tmp.path().join("prefs.jsonl");
    let out = rank(&samples, &prefs);
    assert_ok(&out);
    // Scores: 1 (right, one word), 0.625 (right, four words), 0.5 (right, a sentence).
    let best_first = ["Paris", "Paris, France, Europe, Earth", "The capital of France is Paris."];
    assert_eq!(read_rows(&prefs), [json!({"prompt": prompt, "responses": best_first})]);

    let out = rlhf(&["demo", "judge", "--data", samples.to_str().unwrap(), "--json"]);
    assert_ok(&out);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["answers"], 3);
    assert_eq!(verdict["correct"], 1.0);
    // form: 0 (a sentence), 1 (one word), 0.25 (four words)
    assert!((verdict["form"].as_f64().unwrap() - 1.25 / 3.0).abs() < 1e-12, "{verdict}");
}

#[test]
fn a_row_the_judge_cannot_read_is_refused_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("samples.jsonl");
    write_jsonl(
        &samples,
        &[
            json!({"prompt": "What color is snow? Answer in one word.", "completion": "White"}),
            json!({"prompt": "Write me a poem.", "completion": "No."}),
        ],
    );
    let out = rlhf(&["demo", "judge", "--data", samples.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("samples.jsonl:2: field `prompt` is not one of the demo's prompts"),
        "{}",
        stderr(&out)
    );
    let prefs = tmp.path().join("prefs.jsonl");
    let out = rank(&samples, &prefs);
    assert_eq!(out.status.code(), Some(2));
    assert!(!prefs.exists(), "nothing written");
}

/// `rlhf demo judge` with `requests` piped to stdin and the options `extra`.
fn judge_stdin(extra: &[&str], requests: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rlhf"))
        .args(["demo", "judge"])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(requests.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

const FRANCE: &str = "What is the capital of France? Answer in one word.";

#[test]
fn the_judge_as_a_reward_program_answers_a_number_a_line() {
    let requests = format!(
        "{}\n{}\n",
        json!({"prompt": FRANCE, "completion": "Paris"}),
        json!({"prompt": [{"role": "user", "content": FRANCE}], "completion": "Lyon", "id": 7}),
    );
    let out = judge_stdin(&["--reward-program"], &requests);
    assert_ok(&out);
    // Paris: correct and one word, 1; Lyon: wrong but one word, (0 + 1) / 2.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n0.5\n");
    let out = judge_stdin(&["--reward-program", "--metric", "correct"], &requests);
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n0\n");

    // What `rlhf grpo` does with it: started once, asked batch after batch.
    let command: Vec<String> =
        [env!("CARGO_BIN_EXE_rlhf"), "demo", "judge", "--reward-program", "--metric", "correct"]
            .map(String::from)
            .to_vec();
    let mut judge =
        RewardProgram::start("reward `judge`", &command, Duration::from_secs(30)).unwrap();
    let ask = |completion: &str| json!({"prompt": FRANCE, "completion": completion});
    assert_eq!(judge.score(&[ask("Paris"), ask("Lyon")]).unwrap(), [1.0, 0.0]);
    assert_eq!(judge.score(&[ask("It is Paris.")]).unwrap(), [1.0]);
}

#[test]
fn the_judge_as_a_reward_program_stops_at_an_unknown_prompt_with_its_line() {
    let requests = format!(
        "{}\n{}\n",
        json!({"prompt": FRANCE, "completion": "Paris"}),
        json!({"prompt": "Write me a poem.", "completion": "No."}),
    );
    let out = judge_stdin(&["--reward-program"], &requests);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n", "answered up to the bad line");
    assert!(
        stderr(&out).contains("stdin line 2: field `prompt` is not one of the demo's prompts"),
        "{}",
        stderr(&out)
    );
    let out = judge_stdin(&["--reward-program", "--data", "answers.jsonl"], "");
    assert_eq!(out.status.code(), Some(2), "--data and --reward-program are exclusive");
    assert!(stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
}

/// The demo script's quick mode: every stage on tiny models, then the summary, the charts, the
/// report and the chat transcript.
#[test]
fn the_quick_demo_runs_every_stage_and_writes_summary_charts_report_and_chat() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("demo");
    let run = Command::new("bash")
        .arg(root().join("scripts/demo.sh"))
        .arg("--quick")
        .env("RLHF_DEMO_DIR", &out_dir)
        .env("RLHF_BIN", env!("CARGO_BIN_EXE_rlhf"))
        .output()
        .unwrap();
    assert!(run.status.success(), "demo.sh --quick failed:\n{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);

    let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
    assert!(stdout.contains(summary.trim_end()), "the summary is printed too");
    for row in [
        "| base |",
        "| SFT |",
        "| PPO |",
        "| DPO |",
        "pairwise accuracy on",
        "Moderation: validation AUPRC",
        "| total |",
    ] {
        assert!(summary.contains(row), "no {row:?} in\n{summary}");
    }
    for stage in [
        "task data",
        "sft",
        "comparisons",
        "reward",
        "ppo",
        "dpo",
        "held-out evaluation",
        "moderate",
    ] {
        assert!(summary.contains(&format!("| {stage} |")), "no time for {stage} in\n{summary}");
    }

    // The reward model is the SFT model with a scalar head, trained above its first block.
    let (sft, reward) = (
        read(&out_dir.join("sft/model.safetensors")),
        read(&out_dir.join("reward/model.safetensors")),
    );
    let frozen = "transformer.h.0.mlp.c_fc.weight";
    assert_eq!(floats(&reward[frozen]), floats(&sft[frozen]), "{frozen} changed");
    let top = "transformer.h.1.mlp.c_fc.weight";
    assert_ne!(floats(&reward[top]), floats(&sft[top]), "{top} did not train");

    // Five stages log a `loss` that means something else in each: a chart per stage.
    for chart in ["sft-loss", "reward-loss", "dpo-loss", "moderate-loss", "score", "kl"] {
        let svg = std::fs::read_to_string(out_dir.join(format!("plots/{chart}.svg"))).unwrap();
        roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{chart}.svg: {e}"));
        let png = std::fs::read(out_dir.join(format!("plots/{chart}.png"))).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let info = decoder.read_info().unwrap_or_else(|e| panic!("{chart}.png: {e}"));
        assert!(info.info().width > 100, "{chart}.png");
    }
    let report = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(report.contains("<svg") && !report.contains("<script"), "a self-contained page");

    // The scripted chat, four turns, is in the summary.
    assert_eq!(summary.lines().filter(|l| l.starts_with("you> ")).count(), 4, "{summary}");
    assert_eq!(summary.lines().filter(|l| l.starts_with("assistant> ")).count(), 4, "{summary}");
}
