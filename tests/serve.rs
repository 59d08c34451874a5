//! `rlhf serve` end to end with the official `openai` client (tests/serve_client.py, in
//! `.venv`): answers equal to `rlhf generate`'s and `rlhf moderate score`'s, streaming, the
//! prompt cache, 16 concurrent streams each equal to its answer alone, each error class, 429
//! from a full queue, SIGTERM finishing the request in flight, and bad input.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use serde_json::{Value, json};

const QUESTION: &str = "What is the capital of France?";
const KEY: &str = "sk-test";

/// A tiny untrained GPT-2 (`base`) and a moderation classifier that flags "idiot" (`mod`).
fn fixture() -> &'static PathBuf {
    static FIXTURE: OnceLock<PathBuf> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let safe = [QUESTION, "What a lovely morning for a walk.", "Tell me about the sky.", "a b c"];
        let insults = ["You are a worthless idiot.", "Shut up, you stupid idiot.", "Nobody likes you, idiot."];
        let mut rows = Vec::new();
        for prefix in ["", "Well, ", "Honestly, ", "Listen: "] {
            for text in safe {
                rows.push(json!({"text": format!("{prefix}{text}"), "HR": 0, "S": 0, "H": 0, "V": 0, "SH": 0}));
            }
            for text in insults {
                rows.push(json!({"text": format!("{prefix}{text}"), "HR": 1, "S": 0, "H": 0, "V": 0, "SH": 0}));
            }
        }
        write_jsonl(&dir.join("texts.jsonl"), &rows);
        let run = |args: &[&str]| assert_ok(&rlhf_in(&dir, args).output().unwrap());
        run(&["tokenizer", "train", "--data", "texts.jsonl", "--vocab-size", "300", "--out", "tok"]);
        for (out, positions) in [("base", "n_positions=256"), ("modbase", "n_positions=64")] {
            run(&["model", "init", "--preset", "tiny", "--tokenizer", "tok", "--out", out, "--set", positions]);
        }
        std::fs::write(
            dir.join("moderate.toml"),
            tiny_moderate_config("texts.jsonl"),
        )
        .unwrap();
        run(&["moderate", "train", "--config", "moderate.toml"]);
        dir
    })
}

/// A running `rlhf serve` on a free port; stopped when dropped.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut command = rlhf_in(fixture(), &["serve", "--model", "base", "--port", "0"]);
        let mut child = command.args(args).stderr(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut url = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(at) = line.find("http://") {
                url = Some(line[at..].split_whitespace().next().unwrap().to_string());
                break;
            }
        }
        let url = url.expect("the server printed its address");
        // Keep reading: a full pipe would stall the server's log lines.
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self { child, url, log }
    }

    fn client(&self, mode: &str) -> Command {
        let mut command = Command::new(python());
        command.arg(root().join("tests/serve_client.py")).args([mode, &self.url, KEY]);
        command
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output_json(mut command: Command) -> Value {
    let out = command.output().unwrap();
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_openai_client_gets_what_the_command_line_gives() {
    let server = Server::start(&["--api-key", KEY]);
    let seen = output_json(server.client("all"));

    assert_eq!(seen["models"], json!(["base"]));
    let generated = rlhf_in(
        fixture(),
        &[
            "generate",
            "--model",
            "base",
            "--prompt",
            QUESTION,
            "--greedy",
            "--max-new-tokens",
            "16",
        ],
    )
    .output()
    .unwrap();
    assert_ok(&generated);
    let generated: Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert_eq!(seen["greedy"]["text"], generated["completion"], "{seen}");
    assert_eq!(seen["greedy"]["completion_tokens"], generated["completion_tokens"]);
    assert_eq!(seen["greedy_streamed"]["text"], generated["completion"]);
    let usage = &seen["greedy_streamed"]["usage"];
    assert_eq!(usage["completion_tokens"], generated["completion_tokens"]);
    assert_eq!(usage["prompt_tokens"], generated["prompt_tokens"]);
    // The second time, all but the last prompt token came from the prompt cache.
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(prompt_tokens - 1));
    assert!(seen["follow_up_cached"].as_u64().unwrap() > prompt_tokens, "{seen}");

    let completions = seen["completions"].as_array().unwrap();
    assert_eq!(completions.len(), 4);
    assert_eq!(completions[0][1], completions[1][1], "greedy samples of one prompt agree");

    let errors = &seen["errors"];
    assert_eq!(errors["no_key"]["class"], "AuthenticationError");
    for (name, param) in [
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("n", "n"),
        ("role", "messages[0].role"),
    ] {
        assert_eq!(errors[name]["class"], "BadRequestError", "{name}: {errors}");
        assert_eq!(errors[name]["param"], param, "{name}");
    }
    assert_eq!(errors["route"]["class"], "NotFoundError");
    assert_eq!(errors["context"]["param"], "messages");
    assert_eq!(errors["context"]["code"], "context_length_exceeded");

    assert_eq!(seen["concurrent_equal"], 16, "{seen}");
    assert!(seen["concurrent_distinct"].as_u64().unwrap() > 8);
    let log = server.log.lock().unwrap();
    assert!(log.iter().any(|l| l.starts_with("POST /v1/chat/completions 200 ")), "{log:?}");
    assert!(log.iter().any(|l| l.starts_with("GET /v1/models 401 ")), "{log:?}");
}

#[test]
fn moderation_answers_as_the_command_line_and_refuses_flagged_messages() {
    let server = Server::start(&["--moderation", "mod", "--api-key", KEY]);
    let seen = output_json(server.client("moderation"));
    // /v1/moderations says what `rlhf moderate score` says.
    let texts = ["You are a worthless idiot.", "What a lovely morning for a walk."];
    let scored = rlhf_in(fixture(), &["moderate", "score", "--model", "mod", texts[0], texts[1]])
        .output()
        .unwrap();
    assert_ok(&scored);
    let scored: Vec<Value> = String::from_utf8(scored.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (served, cli) in seen["moderations"].as_array().unwrap().iter().zip(&scored) {
        assert_eq!(served["flagged"], cli["flagged"]);
        assert_eq!(served["categories"]["harassment"], cli["categories"]["harassment"]);
        let (a, b) = (&served["category_scores"], &cli["category_scores"]);
        for (name, score) in b.as_object().unwrap() {
            let diff = (a[name].as_f64().unwrap() - score.as_f64().unwrap()).abs();
            assert!(diff < 1e-6, "{name}: {diff}");
        }
    }
    assert_eq!(scored[0]["flagged"], true);
    for flagged in ["flagged", "flagged_streamed"] {
        assert_eq!(
            seen[flagged]["finish"],
            if flagged == "flagged" { json!("content_filter") } else { json!(["content_filter"]) }
        );
        assert!(
            seen[flagged]["text"].as_str().unwrap().starts_with("Sorry, I can't respond to that")
        );
    }
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let server = Server::start(&["--max-batch", "1", "--max-queue", "1"]);
    let outcomes = output_json(server.client("busy"));
    let outcomes: Vec<&str> =
        outcomes.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(outcomes.contains(&"ok") && outcomes.contains(&"429"), "{outcomes:?}");
    assert!(outcomes.iter().all(|o| *o == "ok" || *o == "429"), "{outcomes:?}");
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mut server = Server::start(&[]);
    let mut client = server.client("long").stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap()).lines();
    assert_eq!(stdout.next().unwrap().unwrap(), "streaming");
    let status = server.terminate();
    assert_eq!(status.code(), Some(0));
    let done: Value = serde_json::from_str(&stdout.next().unwrap().unwrap()).unwrap();
    assert!(client.wait().unwrap().success());
    assert!(done["completion_tokens"].as_u64().unwrap() > 0, "{done}");
    assert!(done["finish"] == json!(["length"]) || done["finish"] == json!(["stop"]), "{done}");
    let log = server.log.lock().unwrap();
    assert!(log.iter().any(|l| l.contains("finishing the requests in flight")), "{log:?}");
}

#[test]
fn a_client_that_hangs_up_frees_its_place_at_once() {
    let server = Server::start(&["--max-batch", "1"]);
    output_json(server.client("hangup"));
    // The next request gets the one place in the batch.
    let out = server.client("long").output().unwrap();
    assert_ok(&out);
    let last = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string();
    let seen: Value = serde_json::from_str(&last).unwrap();
    assert!(seen["completion_tokens"].as_u64().unwrap() > 0);
    let log = server.log.lock().unwrap();
    let gone = log.iter().find(|l| l.starts_with("client went away")).expect("a hang-up logged");
    let tokens: usize = gone.split_whitespace().rev().nth(1).unwrap().parse().unwrap();
    assert!(tokens < 200, "{gone}");
}

#[test]
fn bad_input_exits_2_naming_what_is_wrong() {
    let out = rlhf_in(fixture(), &["serve", "--model", "missing"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));

    let server = Server::start(&[]);
    let port = server.url.rsplit(':').next().unwrap().trim_end_matches("/v1").to_string();
    let out = rlhf_in(fixture(), &["serve", "--model", "base", "--port", &port]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );

    let out =
        rlhf_in(fixture(), &["serve", "--model", "base", "--max-batch", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--max-batch must be at least 1"));
}
