//! Reward programs: a command the GRPO stage starts once and then asks for scores, batch after
//! batch — one compact JSON request a line on its stdin, one number a line on its stdout, in
//! order. Any language can be a reward (a Python verifier, a judge model behind an API, the
//! demo's gold judge as `rlhf demo judge --reward-program`), as TRL's reward functions can be
//! any Python callable.
//!
//! Two threads keep the pipes moving whatever the program does: a writer owns its stdin (a
//! program that stops reading cannot block us, and one that answers while we still write cannot
//! deadlock us on full pipe buffers), a reader drains its stdout into a channel, so each answer
//! is waited for with a timeout.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::bad_input;

/// How long a program may take to exit once its stdin is closed (or after it closed its
/// stdout) before it is killed or reported as still running.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// How much of a line that is not a number an error quotes.
const QUOTED_CHARS: usize = 80;

/// A reward program: a command started once, one JSON request a line in, one number a line out.
pub struct RewardProgram {
    /// How errors call it: "reward `judge`".
    name: String,
    /// The command as the user wrote it, for errors.
    shown: String,
    /// The longest wait for one answer.
    timeout: Duration,
    child: Child,
    /// Batches for the writer thread; dropping it closes the program's stdin.
    to_stdin: Option<Sender<Vec<u8>>>,
    /// The program's stdout, a line at a time; disconnected once it is closed.
    answers: Receiver<String>,
    /// Set by an error that leaves answers unread: a later answer could belong to the wrong
    /// request, so the program is not asked again.
    broken: bool,
}

impl RewardProgram {
    /// `name` is how errors call it (e.g. "reward `judge`" or the config key); `command` is argv.
    /// A first element `rlhf` means this very binary (std::env::current_exe), so configs can say
    /// `command = ["rlhf", "demo", "judge", "--reward-program"]` without a PATH.
    pub fn start(name: &str, command: &[String], timeout: Duration) -> Result<Self> {
        let shown = command.join(" ");
        let Some((program, args)) = command.split_first() else {
            return Err(bad_input!("{name}: the command is empty"));
        };
        let resolved = resolve_program(program)?;
        let mut child = Command::new(&resolved)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()) // the program's messages are the user's to read
            .spawn()
            .map_err(|e| {
                bad_input!(
                    "{name}: could not start `{shown}`: {e}\nhint: check that `{}` is the right path (or on PATH) and is executable",
                    resolved.to_string_lossy()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            unreachable!("both pipes were asked for")
        };
        Ok(Self {
            name: name.to_string(),
            shown,
            timeout,
            child,
            to_stdin: Some(spawn_writer(stdin)),
            answers: spawn_reader(stdout),
            broken: false,
        })
    }

    /// Writes every request (one compact JSON object per line), flushes, then reads one number
    /// per request, waiting at most the timeout for each.
    pub fn score(&mut self, requests: &[serde_json::Value]) -> Result<Vec<f32>> {
        if self.broken {
            return Err(bad_input!(
                "{} (`{}`) is not asked again after its earlier error",
                self.name,
                self.shown
            ));
        }
        self.broken = true; // until every answer is read
        let mut batch = Vec::new();
        for request in requests {
            serde_json::to_writer(&mut batch, request)?; // compact: no newline inside
            batch.push(b'\n');
        }
        if let Some(to_stdin) = &self.to_stdin {
            // A writer gone means the program closed its stdin; its output will say why.
            let _ = to_stdin.send(batch);
        }
        let n = requests.len();
        let mut scores = Vec::with_capacity(n);
        for k in 1..=n {
            let line = match self.answers.recv_timeout(self.timeout) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(bad_input!(
                        "{} (`{}`) did not answer request {k} of {n} within {} s\nhint: raise the reward's `timeout_s` in the config, and check that the program flushes its output after each line (Python: print(score, flush=True))",
                        self.name,
                        self.shown,
                        self.timeout.as_secs_f64()
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let how = match self.exit_status() {
                        Some(status) => format!("exited ({status})"),
                        None => "closed its output".to_string(),
                    };
                    return Err(bad_input!(
                        "{} (`{}`) {how} before answering request {k} of {n}",
                        self.name,
                        self.shown
                    ));
                }
            };
            scores.push(parse_score(&line).map_err(|problem| {
                bad_input!(
                    "{} (`{}`) answered request {k} of {n} with {problem}\nhint: print one number a line, `nan` for no score",
                    self.name,
                    self.shown
                )
            })?);
        }
        self.broken = false;
        Ok(scores)
    }

    /// The program's exit status, waiting a little for it to exit after closing its output.
    fn exit_status(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + EXIT_GRACE;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }
}

impl Drop for RewardProgram {
    /// Closes stdin (the program's cue to exit), then kills it if it has not exited shortly
    /// after. The pipe threads are not joined: a grandchild holding a pipe open must not hang us.
    fn drop(&mut self) {
        self.to_stdin = None;
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `rlhf` is this very binary, so a config needs no PATH to call one of its own commands.
fn resolve_program(program: &str) -> Result<OsString> {
    if program == "rlhf" {
        let exe = std::env::current_exe()
            .map_err(|e| anyhow::anyhow!("finding this binary's path for `rlhf`: {e}"))?;
        return Ok(exe.into_os_string());
    }
    Ok(OsString::from(program))
}

/// Writes each batch it is sent and flushes; stops at the first error (the program closed its
/// stdin) or once the sender is dropped, closing the program's stdin.
fn spawn_writer(mut stdin: ChildStdin) -> Sender<Vec<u8>> {
    let (to_stdin, batches) = channel::<Vec<u8>>();
    thread::spawn(move || {
        for batch in batches {
            if stdin.write_all(&batch).and_then(|()| stdin.flush()).is_err() {
                break;
            }
        }
    });
    to_stdin
}

/// Sends each line of the program's stdout (newline removed, invalid UTF-8 replaced) until it
/// is closed.
fn spawn_reader(stdout: ChildStdout) -> Receiver<String> {
    let (lines, answers) = channel();
    thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    if lines.send(text).is_err() {
                        break;
                    }
                }
            }
        }
    });
    answers
}

/// One answer: a finite number, or NaN for "no score" (`nan`, `null`, Python's `None`, as a
/// TRL reward function may return None). Infinities are refused: no advantage survives one.
fn parse_score(line: &str) -> std::result::Result<f32, String> {
    let text = line.trim();
    if ["nan", "null", "none"].iter().any(|word| text.eq_ignore_ascii_case(word)) {
        return Ok(f32::NAN);
    }
    match text.parse::<f32>() {
        Ok(score) if score.is_finite() => Ok(score),
        Ok(_) => Err(format!("{text}, which is not finite")),
        Err(_) => Err(format!("{}, which is not a number", quoted(text))),
    }
}

/// `"line"`, cut to [`QUOTED_CHARS`] characters.
fn quoted(line: &str) -> String {
    let mut chars = line.chars();
    let head: String = chars.by_ref().take(QUOTED_CHARS).collect();
    let more = if chars.next().is_some() { "…" } else { "" };
    format!("{head:?}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{EXIT_BAD_INPUT, exit_code};
    use serde_json::json;

    const SECOND: Duration = Duration::from_secs(1);

    fn start(script: &[&str], timeout: Duration) -> RewardProgram {
        let argv: Vec<String> = script.iter().map(|s| s.to_string()).collect();
        RewardProgram::start("reward `test`", &argv, timeout).expect("starting the program")
    }

    /// `python3 -c` with a script that answers each request line with `expression` of `r`.
    fn python(expression: &str) -> RewardProgram {
        let script = format!(
            "import json, sys\nfor line in sys.stdin:\n    r = json.loads(line)\n    print({expression}, flush=True)"
        );
        start(&["python3", "-c", &script], 10 * SECOND)
    }

    fn request(completion: &str) -> serde_json::Value {
        json!({ "prompt": "Say something.", "completion": completion })
    }

    /// The error's message, after checking it is the user's (exit code 2).
    fn message(err: anyhow::Error) -> String {
        assert_eq!(exit_code(&err), EXIT_BAD_INPUT, "{err:#}");
        format!("{err:#}")
    }

    #[test]
    fn scores_come_back_in_request_order_batch_after_batch() {
        let mut program = python("len(r['completion'])");
        let scores = program.score(&[request("abc"), request(""), request("hello")]).unwrap();
        assert_eq!(scores, [3.0, 0.0, 5.0]);
        assert_eq!(program.score(&[request("xy")]).unwrap(), [2.0], "the program stays up");
        assert_eq!(program.score(&[]).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn two_thousand_requests_do_not_deadlock_on_the_pipes() {
        // 750 kB of requests, 86 kB of answers written line by line while we still write: a
        // caller that wrote everything before reading would fill both pipe buffers and wait on
        // a program waiting on it.
        let mut program = python("f\"{len(r['completion']):.40f}\"");
        let (prompt, long) = ("p".repeat(300), "x".repeat(100));
        let requests: Vec<_> = (0..2000)
            .map(|i| json!({ "prompt": prompt, "completion": &long[..i % 100] }))
            .collect();
        let scores = program.score(&requests).unwrap();
        let expected: Vec<f32> = (0..2000).map(|i| (i % 100) as f32).collect();
        assert_eq!(scores, expected);
    }

    #[test]
    fn nan_means_no_score_and_infinity_is_refused() {
        let mut program = start(
            &[
                "sh",
                "-c",
                "read a; echo nan; read b; echo NaN; read c; echo null; read d; echo ' -0.5 '",
            ],
            10 * SECOND,
        );
        let scores = program.score(&[request("a"), request("b"), request("c"), request("d")]);
        let scores = scores.unwrap();
        assert!(scores[..3].iter().all(|s| s.is_nan()), "{scores:?}");
        assert_eq!(scores[3], -0.5);
        assert_eq!(parse_score("None").map(f32::is_nan), Ok(true));
        assert_eq!(parse_score("inf"), Err("inf, which is not finite".to_string()));
        assert!(parse_score("1e39").is_err(), "overflows f32 to infinity");
    }

    #[test]
    fn a_line_that_is_not_a_number_is_quoted() {
        let mut program =
            start(&["sh", "-c", "read a; echo 0.5; read b; echo 'score: high'"], SECOND);
        let err = program.score(&[request("a"), request("b")]).unwrap_err();
        assert_eq!(
            message(err).lines().next().unwrap(),
            "reward `test` (`sh -c read a; echo 0.5; read b; echo 'score: high'`) answered request 2 of 2 with \"score: high\", which is not a number"
        );
        let again = program.score(&[request("c")]).unwrap_err();
        assert!(message(again).contains("not asked again"), "answers may be out of step");
        let long = "y".repeat(200);
        assert_eq!(quoted(&long), format!("\"{}\"…", "y".repeat(80)));
    }

    #[test]
    fn a_program_that_exits_early_is_named_with_its_status() {
        let mut program = start(&["sh", "-c", "read a; echo 1; exit 3"], 10 * SECOND);
        let err = program.score(&[request("a"), request("b")]).unwrap_err();
        let err = message(err);
        assert!(err.contains("reward `test` (`sh -c read a; echo 1; exit 3`)"), "{err}");
        assert!(err.contains("exited (exit status: 3) before answering request 2 of 2"), "{err}");
    }

    #[test]
    fn a_program_that_hangs_times_out_and_is_killed_on_drop() {
        let mut program = start(&["sh", "-c", "sleep 30"], Duration::from_millis(500));
        let begun = Instant::now();
        let err = message(program.score(&[request("a")]).unwrap_err());
        assert!(err.contains("did not answer request 1 of 1 within 0.5 s"), "{err}");
        assert!(err.contains("`timeout_s`"), "says how to wait longer: {err}");
        drop(program);
        assert!(begun.elapsed() < 5 * SECOND, "drop kills a program that ignores its stdin");
    }

    #[test]
    fn a_program_that_cannot_start_says_so() {
        let argv = ["./no-such-reward-program".to_string()];
        let err = RewardProgram::start("reward `judge`", &argv, SECOND).err().expect("an error");
        let err = message(err);
        assert!(
            err.starts_with("reward `judge`: could not start `./no-such-reward-program`"),
            "{err}"
        );
        assert!(err.contains("hint: check that"), "{err}");
        let err = RewardProgram::start("reward `judge`", &[], SECOND).err().expect("an error");
        assert!(message(err).contains("the command is empty"));
    }

    #[test]
    fn rlhf_is_this_binary() {
        let exe = std::env::current_exe().unwrap().into_os_string();
        assert_eq!(resolve_program("rlhf").unwrap(), exe);
        assert_eq!(resolve_program("python3").unwrap(), OsString::from("python3"));
    }
}
