//! `rlhf chat` end to end on a tiny GPT-2 fine-tuned to answer four questions: the REPL in a
//! pseudo-terminal (streaming, commands, Ctrl-C, context overflow, moderation, /compare into
//! `rlhf reward train`, /good and /bad into `rlhf kto train`, logs), piped mode with `--json` (the KV cache reused across turns,
//! answers equal to `rlhf generate`'s), and bad input.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::*;
use rexpect::session::PtySession;
use serde_json::{Value, json};

const QA: [(&str, &str); 4] = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("What color is the sky?", "The sky is blue."),
    ("How many legs does a cat have?", "A cat has four legs."),
    ("What is two plus two?", "Two plus two is four."),
];

const SAFE: [&str; 4] = [
    "What a lovely morning for a walk.",
    "Can you recommend a good book?",
    "What is the capital of France?",
    "Tell me about the sky.",
];
const HARASSMENT: [&str; 4] = [
    "You are a worthless idiot.",
    "Shut up, you stupid idiot.",
    "Nobody likes you, idiot.",
    "You idiot, you are worthless.",
];

/// Models every test shares, trained once per run: `sft` (answers QA, 1024-token window),
/// `mod` (flags "idiot" as harassment), `rm` (a reward model barely trained from `sft`).
struct Fixture {
    dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(Fixture::build)
}

impl Fixture {
    fn build() -> Self {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Self { dir };
        // The recipe of tests/sft.rs: 48 demonstrations in the three row forms.
        let sft: Vec<Value> = (0..48)
            .map(|i| {
                let (q, a) = QA[i % QA.len()];
                let (user, answer) = (json!({"role": "user", "content": q}), json!({"role": "assistant", "content": a}));
                match i % 3 {
                    0 => json!({"prompt": q, "completion": a}),
                    1 => json!({"messages": [user, answer]}),
                    _ => json!({"messages": [{"role": "system", "content": "Answer briefly."}, user, answer]}),
                }
            })
            .collect();
        write_jsonl(&f.path("sft.jsonl"), &sft);
        // Safe texts include what the chat model says, whole and cut short.
        let mut safe: Vec<String> = SAFE.iter().map(|s| s.to_string()).collect();
        for (q, a) in QA {
            let words: Vec<&str> = a.split(' ').collect();
            safe.extend([q.to_string(), a.to_string(), format!("{}.", words[..3].join(" "))]);
        }
        let mut moderation = Vec::new();
        for prefix in ["", "Well, ", "Honestly, ", "Listen: "] {
            for text in &safe {
                moderation.push(json!({"text": format!("{prefix}{text}"), "HR": 0, "S": 0, "H": 0, "V": 0, "SH": 0}));
            }
            for text in HARASSMENT {
                moderation.push(json!({"text": format!("{prefix}{text}"), "HR": 1, "S": 0, "H": 0, "V": 0, "SH": 0}));
            }
        }
        write_jsonl(&f.path("moderation.jsonl"), &moderation);
        for (data, out) in [("sft.jsonl", "tok"), ("moderation.jsonl", "modtok")] {
            assert_ok(&f.run(&[
                "tokenizer",
                "train",
                "--data",
                data,
                "--vocab-size",
                "300",
                "--out",
                out,
            ]));
        }
        let init = |out: &str, tokenizer: &str, positions: &str| {
            let set = format!("n_positions={positions}");
            assert_ok(&f.run(&[
                "model",
                "init",
                "--preset",
                "tiny",
                "--tokenizer",
                tokenizer,
                "--out",
                out,
                "--set",
                &set,
            ]));
        };
        init("base", "tok", "1024");
        init("modbase", "modtok", "64");
        std::fs::write(
            f.path("sft.toml"),
            "[model]\nbase = \"base\"\n[data]\ntrain = \"sft.jsonl\"\nvalid_fraction = 0.0\nmax_len = 64\n\
             [train]\nmax_steps = 150\nbatch_size = 8\nlr = 3e-3\nwarmup_steps = 5\neval_every = 0\nsave_every = 0\nlog_every = 20\n\
             [output]\ndir = \"sft\"\n",
        )
        .unwrap();
        std::fs::write(f.path("moderate.toml"), tiny_moderate_config("moderation.jsonl")).unwrap();
        // The two trainings take turns on the cores rather than queueing.
        let mut sft = f
            .command(&["sft", "train", "--config", "sft.toml"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let moderate =
            f.command(&["moderate", "train", "--config", "moderate.toml"]).output().unwrap();
        assert_ok(&moderate);
        let mut errors = String::new();
        let status = sft.wait().unwrap();
        std::io::Read::read_to_string(sft.stderr.as_mut().unwrap(), &mut errors).unwrap();
        assert!(status.success(), "sft: {errors}");
        let prefs: Vec<Value> = QA
            .iter()
            .map(|(q, a)| json!({"prompt": q, "chosen": a, "rejected": "I do not know."}))
            .collect();
        write_jsonl(&f.path("rm-prefs.jsonl"), &prefs);
        assert_ok(&f.reward_train("rm-prefs.jsonl", "rm"));
        f
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        rlhf_in(&self.dir, args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `rlhf reward train` from the SFT model on `data`, a few steps.
    fn reward_train(&self, data: &str, out: &str) -> Output {
        let config = format!(
            "[model]\nbase = \"sft\"\n[data]\ntrain = \"{data}\"\nvalid = \"{data}\"\nmax_len = 64\n\
             [train]\nmax_steps = 3\nbatch_size = 4\nlr = 1e-3\nwarmup_steps = 1\neval_every = 0\nsave_every = 0\nlog_every = 1\n\
             [output]\ndir = \"{out}\"\n"
        );
        let file = format!("{out}.toml");
        std::fs::write(self.path(&file), config).unwrap();
        self.run(&["reward", "train", "--config", &file])
    }

    /// `rlhf chat ARGS…` with `input` on stdin.
    fn piped(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(&[&["chat", "--model", "sft"], args].concat())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    json_lines(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// `rlhf chat --model sft ARGS…` on a pseudo-terminal, in the fixture's directory, once the
/// REPL has greeted.
fn repl(f: &Fixture, args: &[&str], env: &[(&str, &str)]) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rlhf"));
    command
        .args(["--threads", "1", "chat", "--model", "sft"])
        .args(args)
        .current_dir(&f.dir)
        .env("RLHF_HISTORY", f.path("history"))
        .env("TERM", "xterm")
        .envs(env.iter().copied());
    let options =
        rexpect::reader::Options::new().timeout_ms(Some(30_000)).strip_ansi_escape_codes(true);
    let mut p = rexpect::session::spawn_with_options(command, options).unwrap();
    expect(&mut p, "/help lists the commands");
    p
}

/// Everything the REPL printed up to `needle`.
fn expect(p: &mut PtySession, needle: &str) -> String {
    p.exp_string(needle).unwrap_or_else(|e| panic!("waiting for {needle:?}: {e}"))
}

/// Types a line once the prompt shows: typing before the line editor is ready loses keys, as
/// on a real terminal (the prompt is `you› `, which rexpect reads byte by byte as Latin-1).
fn say(p: &mut PtySession, line: &str) {
    expect(p, "you\u{e2}\u{80}\u{ba} ");
    p.send_line(line).unwrap();
}

/// `/exit`, and the REPL ends with 0.
fn leave(mut p: PtySession) {
    say(&mut p, "/exit");
    p.exp_eof().unwrap();
    match p.process_mut().wait().unwrap() {
        rexpect::process::WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_repl_in_a_terminal() {
    let f = fixture();
    let mut p = repl(
        f,
        &[
            "--moderation",
            "mod",
            "--reward",
            "rm",
            "--log",
            "logs",
            "--prefs",
            "prefs.jsonl",
            "--system",
            "Answer briefly.",
            "--max-new-tokens",
            "16",
        ],
        &[],
    );

    // Answers stream, then a status line with the speed and the reward.
    say(&mut p, QA[0].0);
    let shown = expect(&mut p, "tokens/s");
    assert!(shown.contains("Paris is the capital of France."), "{shown}");
    expect(&mut p, "reward ");
    say(&mut p, "/set temperature=0.8 seed=7");
    expect(&mut p, "temperature=0.8");
    say(&mut p, "/set top_p=3");
    expect(&mut p, "error: top_p must be in (0, 1]");
    say(&mut p, "/set temperature=0");
    expect(&mut p, "temperature=0 ");
    say(&mut p, QA[1].0);
    expect(&mut p, "tokens/s");
    say(&mut p, "/retry");
    expect(&mut p, "tokens/s");
    say(&mut p, "/undo");
    expect(&mut p, "removed the last exchange (2 messages)");
    say(&mut p, QA[2].0);
    expect(&mut p, "tokens/s");
    say(&mut p, "/save saved.jsonl");
    expect(&mut p, "saved 5 messages");

    // Moderation declines a flagged message, naming the category; the model is not called.
    say(&mut p, "You are a worthless idiot.");
    expect(&mut p, "your message was flagged for harassment");

    // Best-of-N by the reward model, then a ranking of three answers.
    say(&mut p, "/best 2");
    expect(&mut p, "best of 2 by reward");
    say(&mut p, "/compare 3");
    expect(&mut p, "[3]");
    expect(&mut p, "rank best first (e.g. 2 1 3, /skip)");
    p.send_line("2 2 1").unwrap();
    expect(&mut p, "error: rank all 3 answers");
    expect(&mut p, "rank best first (e.g. 2 1 3, /skip)");
    p.send_line("2 1 3").unwrap();
    expect(&mut p, "ranking saved; answer 2 continues");

    // A window too small for the conversation: old turns go, with a notice. The long answer
    // is stopped by Ctrl-C; the REPL stays up and keeps the partial answer.
    say(&mut p, "/set max_new_tokens=980 ignore_eos=true");
    expect(&mut p, "ignore_eos=true");
    say(&mut p, QA[3].0);
    expect(&mut p, "no longer fit the 1024-token window");
    expect(&mut p, "Two plus two");
    p.send_control('c').unwrap();
    expect(&mut p, "[interrupted: the partial answer stays in the conversation]");
    say(&mut p, "/save interrupted.jsonl");
    expect(&mut p, "saved");
    say(&mut p, "/set max_new_tokens=16 ignore_eos=false");
    expect(&mut p, "max_new_tokens=16");
    say(&mut p, "/stats");
    expect(&mut p, "tokens reused");

    // Ctrl-C at the prompt clears the line; unknown commands are one-line errors.
    expect(&mut p, "you\u{e2}\u{80}\u{ba} ");
    p.send("half a line").unwrap();
    p.flush().unwrap();
    expect(&mut p, "half a line");
    p.send_control('c').unwrap();
    say(&mut p, "/bogus");
    expect(&mut p, "unknown command /bogus");
    say(&mut p, "/load saved.jsonl");
    expect(&mut p, "loaded 5 messages");
    say(&mut p, QA[0].0);
    expect(&mut p, "tokens/s");
    leave(p);

    // /save wrote what `rlhf sft train` reads; the interrupted answer was kept.
    let saved = read_jsonl(&f.path("saved.jsonl"));
    assert_eq!(saved[0]["messages"][0], json!({"role": "system", "content": "Answer briefly."}));
    let partial = read_jsonl(&f.path("interrupted.jsonl"));
    let messages = partial[0]["messages"].as_array().unwrap();
    let last = messages.last().unwrap();
    assert_eq!(last["role"], "assistant");
    assert!(last["content"].as_str().unwrap().contains("Two plus two"), "{last}");
    assert!(messages.len() < 12);

    // The logs: conversation rows with the model hash and sampler, moderation rows with labels.
    let rows = read_jsonl(&f.path("logs/conversations.jsonl"));
    assert!(rows.iter().all(|r| r["model"]["sha256"].as_str().unwrap().len() == 64));
    assert!(
        rows.iter().all(|r| r["sampling"]["max_new_tokens"].is_number() && r["seed"].is_number())
    );
    assert!(rows.iter().any(|r| r["interrupted"] == true));
    let moderated = read_jsonl(&f.path("logs/moderation.jsonl"));
    let flagged = moderated.iter().find(|r| r["text"] == "You are a worthless idiot.").unwrap();
    assert_eq!((flagged["HR"].as_u64(), flagged["source"].as_str()), (Some(1), Some("user")));
    assert!(moderated.iter().any(|r| r["source"] == "assistant" && r["HR"] == 0));
    let labelled =
        f.run(&["moderate", "eval", "--model", "mod", "--data", "logs/moderation.jsonl"]);
    assert_ok(&labelled);

    // The ranking is a comparison row that `rlhf reward train` reads as it is.
    let prefs = read_jsonl(&f.path("prefs.jsonl"));
    assert_eq!(prefs.len(), 1);
    assert_eq!(prefs[0]["responses"].as_array().unwrap().len(), 3);
    assert_eq!(prefs[0]["prompt"].as_array().unwrap().last().unwrap()["role"], "user");
    assert_ok(&f.reward_train("prefs.jsonl", "rm-from-chat"));
}

/// `/good` and `/bad` append the last answer as a KTO row to the file beside `--prefs`, which
/// `rlhf kto train` reads as it is; with no answer, or no `--prefs`, nothing is written.
#[test]
fn good_and_bad_write_kto_rows_that_kto_train_reads() {
    let f = fixture();
    let _ = std::fs::remove_file(f.path("thumbs.kto.jsonl"));
    let mut p = repl(f, &["--max-new-tokens", "16"], &[]);
    say(&mut p, QA[0].0);
    expect(&mut p, "tokens/s");
    say(&mut p, "/good");
    expect(&mut p, "error: /good needs a file to append KTO rows to: start with --prefs FILE");
    leave(p);

    let args = ["--prefs", "thumbs.jsonl", "--system", "Answer briefly.", "--max-new-tokens", "16"];
    let mut p = repl(f, &args, &[]);
    say(&mut p, "/bad");
    expect(&mut p, "no answer to mark yet");
    say(&mut p, "/help");
    expect(&mut p, "/good, /bad");
    say(&mut p, QA[0].0);
    expect(&mut p, "tokens/s");
    say(&mut p, "/good");
    expect(&mut p, "thumbs up saved to thumbs.kto.jsonl (1 row; `rlhf kto train` reads it)");
    say(&mut p, QA[1].0);
    expect(&mut p, "tokens/s");
    say(&mut p, "/bad");
    expect(&mut p, "thumbs down saved to thumbs.kto.jsonl (2 rows;");
    leave(p);

    // TRL's unpaired conversational rows: the conversation before the answer, system included.
    assert!(!f.path("thumbs.jsonl").exists(), "/compare's file is left to rankings");
    let rows = read_jsonl(&f.path("thumbs.kto.jsonl"));
    assert_eq!(rows.len(), 2);
    let system = json!({"role": "system", "content": "Answer briefly."});
    assert_eq!(rows[0]["prompt"], json!([system, {"role": "user", "content": QA[0].0}]));
    assert_eq!(rows[0]["completion"][0]["role"], "assistant");
    assert!(rows[0]["completion"][0]["content"].as_str().unwrap().contains("Paris"), "{}", rows[0]);
    assert_eq!(rows[0]["label"], true);
    let prompt = rows[1]["prompt"].as_array().unwrap();
    assert_eq!(prompt.len(), 4);
    assert_eq!(prompt[3], json!({"role": "user", "content": QA[1].0}));
    assert_eq!(rows[1]["label"], false);

    std::fs::write(
        f.path("kto.toml"),
        "[model]\nbase = \"sft\"\n[data]\ntrain = \"thumbs.kto.jsonl\"\nmax_len = 64\n\
         [train]\nmax_steps = 2\nbatch_size = 2\nlr = 1e-4\nwarmup_steps = 0\neval_every = 0\nsave_every = 0\nlog_every = 1\n\
         [output]\ndir = \"kto-from-chat\"\n",
    )
    .unwrap();
    assert_ok(&f.run(&["kto", "train", "--config", "kto.toml"]));
    assert!(f.path("kto-from-chat/model.safetensors").is_file());
}

/// Issue 48: `rlhf chat --temperature 0.9` then `/set` showed `temperature=0` (the flag was
/// ignored without `--sample`), and `/retry` sampled at a temperature `/set` did not show.
#[test]
fn a_temperature_flag_means_sampling_and_set_shows_what_retry_uses() {
    let f = fixture();
    let mut p = repl(f, &["--temperature", "0.9", "--max-new-tokens", "8"], &[]);
    say(&mut p, "/set");
    expect(&mut p, "temperature=0.9 top_p=1");
    say(&mut p, "/set temperature=0");
    expect(&mut p, "temperature=0 (greedy; /retry, /best and /compare sample at temperature=0.9)");
    say(&mut p, "/set top_k=5");
    expect(&mut p, "temperature=0.9 top_p=1 top_k=5");
    leave(p);

    // Piped: a temperature alone samples, so two seeds differ where greedy cannot.
    let input: String = QA.iter().map(|(q, _)| format!("{q}\n")).collect();
    let answers = |args: &[&str]| {
        let out = f.piped(&[&["--max-new-tokens", "12"], args].concat(), &input);
        assert_ok(&out);
        out.stdout
    };
    let hot = |seed: &str| answers(&["--temperature", "8", "--seed", seed]);
    assert_ne!(hot("1"), hot("2"), "--temperature alone must sample");
    assert_eq!(answers(&["--seed", "1"]), answers(&["--seed", "2"]), "greedy ignores the seed");
}

/// Issue 48: with scores shown, a message read `flagged (violence 0.19, violence/graphic 0.19,
/// self-harm 0.13)` while the refusal named other categories, flagged at thresholds near 0.
/// Here a copy of the classifier flags `hate` at a threshold of 0, whatever its score.
#[test]
fn shown_scores_name_the_categories_the_refusal_names() {
    let f = fixture();
    let dir = f.path("mod-hate");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(f.path("mod")).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let settings = dir.join("moderation.json");
        let mut json: Value =
            serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
        json["thresholds"]["hate"] = json!(0.0);
        std::fs::write(&settings, json.to_string()).unwrap();
    }
    let mut p = repl(f, &["--moderation", "mod-hate", "--max-new-tokens", "8"], &[]);
    say(&mut p, "/set show_scores=true");
    expect(&mut p, "show_scores=true");
    say(&mut p, SAFE[0]);
    let shown = expect(&mut p, "your message was flagged for hate.");
    let scores = shown.lines().find(|l| l.contains("moderation (your message)")).unwrap();
    assert!(scores.trim().starts_with("moderation (your message): flagged: hate 0."), "{scores}");
    assert_eq!(scores.matches(", ").count(), 0, "only hate is flagged: {scores}");
    leave(p);
}

/// Issue 48: a declined message was followed by a `0 tokens` status line.
#[test]
fn a_refusal_has_no_token_status_line() {
    let f = fixture();
    let mut p = repl(f, &["--moderation", "mod", "--max-new-tokens", "8"], &[]);
    say(&mut p, HARASSMENT[1]);
    expect(&mut p, "your message was flagged for harassment.");
    let after = expect(&mut p, "you\u{e2}\u{80}\u{ba} ");
    assert!(!after.contains("tokens"), "a status line after the refusal: {after:?}");
    p.send_line("/exit").unwrap();
    p.exp_eof().unwrap();
}

/// Issue 48: an answer that stopped at max_new_tokens looked like a finished one.
#[test]
fn an_answer_cut_at_max_new_tokens_is_marked() {
    let f = fixture();
    let mut p = repl(f, &["--max-new-tokens", "3"], &[]);
    say(&mut p, QA[0].0);
    expect(&mut p, "[cut at max_new_tokens=3: /set max_new_tokens=N for longer answers]");
    expect(&mut p, "3 tokens");
    say(&mut p, "/set max_new_tokens=24");
    expect(&mut p, "max_new_tokens=24");
    say(&mut p, QA[1].0);
    let whole = expect(&mut p, "tokens/s");
    assert!(!whole.contains("[cut at"), "a finished answer is not cut: {whole:?}");
    leave(p);

    let out = f.piped(&["--max-new-tokens", "3"], &format!("{}\n", QA[0].0));
    assert_ok(&out);
    assert!(
        stderr(&out).contains("[cut at max_new_tokens=3: --max-new-tokens N for longer answers]"),
        "{}",
        stderr(&out)
    );
}

/// Issue 48: invalid UTF-8 piped into the chat ended it with exit 1 and `reading stdin:
/// stream did not contain valid UTF-8`; every other reader names the line and exits 2.
#[test]
fn invalid_utf8_on_stdin_names_the_line_and_exits_2() {
    let f = fixture();
    let mut child = f
        .command(&["chat", "--model", "sft", "--max-new-tokens", "4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"What is two plus two?\r\nab\xff\xfe\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("stdin:2: not valid UTF-8 (at byte 3)"), "{}", stderr(&out));
    assert!(!out.stdout.is_empty(), "the first line was answered");
}

/// Issue 48: `/compare 3` of three identical answers wrote a ranking of equal texts, which
/// teaches a reward model nothing.
#[test]
fn compare_of_identical_answers_warns_and_writes_nothing() {
    let f = fixture();
    let prefs = f.path("identical-prefs.jsonl");
    let _ = std::fs::remove_file(&prefs);
    let mut p = repl(f, &["--prefs", "identical-prefs.jsonl", "--max-new-tokens", "16"], &[]);
    say(&mut p, QA[0].0);
    expect(&mut p, "tokens/s");
    say(&mut p, "/set temperature=0.01");
    expect(&mut p, "temperature=0.01");
    say(&mut p, "/compare 3");
    expect(&mut p, "warning: the 3 answers are all the same, so there is nothing to rank");
    expect(&mut p, "hint: sample more freely");
    leave(p);
    assert!(!prefs.exists(), "a ranking of identical answers was written");
}

/// Issue 48: `--json` timings came with every digit of a float (`first_token_ms:
/// 12.345678901`).
#[test]
fn json_timings_are_rounded() {
    let f = fixture();
    let out = f.piped(&["--json", "--max-new-tokens", "8"], &format!("{}\n", QA[0].0));
    assert_ok(&out);
    let turn = &json_lines(&out.stdout)[0];
    for key in ["first_token_ms", "tokens_per_second"] {
        let value = turn["timing"][key].to_string();
        let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 1, "{key} = {value}");
    }
}

/// Issue 48: answers broke words in two at the terminal's edge.
#[test]
fn answers_wrap_at_whole_words() {
    let f = fixture();
    let mut p = repl(f, &["--max-new-tokens", "16"], &[("COLUMNS", "12")]);
    say(&mut p, QA[0].0);
    let shown = expect(&mut p, "tokens/s");
    assert!(shown.contains("Paris is the\r\ncapital of\r\nFrance."), "{shown:?}");
    leave(p);
}

#[test]
fn piped_json_reuses_the_cache_and_answers_as_generate_does() {
    let f = fixture();
    let input: String = QA[..3].iter().map(|(q, _)| format!("{q}\n")).collect();
    let out = f.piped(&["--json", "--max-new-tokens", "24"], &input);
    assert_ok(&out);
    let turns = json_lines(&out.stdout);
    assert_eq!(turns.len(), 3);
    // The model learnt single exchanges: its first answer is right, later ones are words.
    assert_eq!(turns[0]["content"], QA[0].1);
    for turn in &turns {
        assert_eq!(turn["role"], "assistant");
        assert_eq!(turn["finish_reason"], "stop");
    }
    // Turn N prefills only its new tokens — the end of the last answer's line and the new
    // message in its template markers; the previous prompt and answer come from the cache.
    let tokenizer = rlhf::data::tokenizer::read(&f.path("sft")).unwrap();
    let usage = |turn: &Value, key: &str| turn["usage"][key].as_u64().unwrap();
    assert_eq!(usage(&turns[0], "cached_tokens"), 0);
    for (pair, (q, _)) in turns.windows(2).zip(&QA[1..]) {
        let (before, now) = (&pair[0], &pair[1]);
        let cached = usage(before, "prompt_tokens") + usage(before, "completion_tokens");
        assert_eq!(usage(now, "cached_tokens"), cached, "{now}");
        let new = format!("\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n");
        let new_tokens = tokenizer.encode(new.as_str(), false).unwrap().len() as u64;
        assert_eq!(usage(now, "prompt_tokens") - cached, new_tokens, "{now}");
    }

    // `rlhf generate` on the same rendered conversation, same seed: the same answers.
    let mut messages = Vec::new();
    let mut rows = Vec::new();
    for (turn, (q, _)) in turns.iter().zip(QA) {
        messages.push(json!({"role": "user", "content": q}));
        rows.push(json!({ "messages": messages }));
        messages.push(json!({"role": "assistant", "content": turn["content"]}));
    }
    write_jsonl(&f.path("conversation-prompts.jsonl"), &rows);
    let generated = f.run(&[
        "generate",
        "--model",
        "sft",
        "--data",
        "conversation-prompts.jsonl",
        "--max-new-tokens",
        "24",
    ]);
    assert_ok(&generated);
    for (row, turn) in json_lines(&generated.stdout).iter().zip(&turns) {
        assert_eq!(row["completion"], turn["content"]);
    }

    // Sampling with a seed repeats itself; plain piped output is the answers alone.
    let sampled =
        |seed: &str| f.piped(&["--sample", "--temperature", "1.5", "--seed", seed], &input).stdout;
    assert_eq!(sampled("3"), sampled("3"));
    let plain = f.piped(&["--prompt", QA[1].0], "");
    assert_ok(&plain);
    assert_eq!(String::from_utf8_lossy(&plain.stdout), format!("{}\n", QA[1].1));
}

#[test]
fn moderation_in_piped_mode_declines_and_reports_the_verdict() {
    let f = fixture();
    let out = f.piped(
        &["--json", "--moderation", "mod"],
        "Shut up, you stupid idiot.\nWhat is two plus two?\n",
    );
    assert_ok(&out);
    let turns = json_lines(&out.stdout);
    assert_eq!(turns[0]["finish_reason"], "content_filter");
    assert_eq!(turns[0]["moderation"]["categories"]["harassment"], true);
    assert!(turns[0]["content"].as_str().unwrap().contains("flagged for harassment"));
    assert_eq!(turns[1]["content"], QA[3].1);
    assert_eq!(turns[1]["moderation"]["flagged"], false);
    // The declined message never reached the model: the second prompt is the first one.
    assert_eq!(turns[1]["usage"]["cached_tokens"], 0);
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let f = fixture();
    let fails = |args: &[&str], expected: &str| {
        let out = f.run(&[&["chat"], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    };
    fails(&["--model", "mod", "--prompt", "hi"], "this is a moderation classifier");
    fails(&["--model", "rm", "--prompt", "hi"], "this is a reward (or value) model");

    let bare = f.path("no-template");
    std::fs::create_dir_all(&bare).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"] {
        std::fs::copy(f.path("sft").join(file), bare.join(file)).unwrap();
    }
    std::fs::write(bare.join("tokenizer_config.json"), "{}").unwrap();
    fails(&["--model", "no-template", "--prompt", "hi"], "no chat_template");
    let out =
        f.run(&["chat", "--model", "no-template", "--template", "chatml", "--prompt", QA[0].0]);
    assert_ok(&out);

    write_jsonl(&f.path("not-a-conversation.jsonl"), &[json!({"prompt": "hi"})]);
    fails(
        &["--model", "sft", "--load", "not-a-conversation.jsonl", "--prompt", "hi"],
        "not-a-conversation.jsonl:1: not a conversation",
    );
    fails(&["--model", "sft", "--max-new-tokens", "1024", "--prompt", "hi"], "leaves no room");
}
