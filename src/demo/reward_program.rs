//! The gold judge as a reward program (`rlhf demo judge --reward-program`): requests a line
//! in, the judge's number a line out, so `rlhf grpo` can train on the demo's verifiable reward
//! (`--metric correct`, RLVR) or on the judge's whole score.

use std::io::{BufRead, Write};

use anyhow::Result;
use serde_json::Value;

use super::judge::{Verdict, judge};
use super::task::TaskIndex;
use crate::bad_input;

/// What of the judge's verdict a reward program answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Metric {
    /// (correct + form) / 2, 0 to 1.
    #[default]
    Score,
    /// 1 for a correct answer, else 0: the verifiable reward.
    Correct,
    /// How well the answer has the asked-for form, 0 to 1.
    Form,
}

impl Metric {
    pub fn of(self, verdict: &Verdict) -> f64 {
        match self {
            Metric::Score => verdict.score,
            Metric::Correct => f64::from(u8::from(verdict.correct)),
            Metric::Form => verdict.form,
        }
    }
}

/// Answers every request of `input` on `output`, flushing after each so a caller that waits
/// for an answer before sending more is not left waiting. Blank lines are skipped; anything
/// else that is not a request of a demo prompt stops with its line number.
pub fn serve(input: impl BufRead, mut output: impl Write, metric: Metric) -> Result<()> {
    let index = TaskIndex::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let at = |message: &str| bad_input!("stdin line {}: {message}", i + 1);
        let request: Value =
            serde_json::from_str(&line).map_err(|e| at(&format!("not a JSON request ({e})")))?;
        let prompt = question(&request["prompt"]).ok_or_else(|| {
            at("field `prompt` is missing, or neither a string nor messages with a user turn")
        })?;
        let task = index.get(prompt).ok_or_else(|| {
            at("field `prompt` is not one of the demo's prompts (see `rlhf demo data`)")
        })?;
        let completion = answer(&request["completion"])
            .ok_or_else(|| at("field `completion` is missing, or neither a string nor messages"))?;
        writeln!(output, "{}", metric.of(&judge(task, completion)))?;
        output.flush()?;
    }
    Ok(())
}

/// The question of a prompt: the text itself, or the last user turn of a conversation.
fn question(prompt: &Value) -> Option<&str> {
    match prompt {
        Value::String(text) => Some(text),
        Value::Array(messages) => {
            messages.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str())
        }
        _ => None,
    }
}

/// The answer of a completion: the text itself, or the content of its last message (TRL's
/// conversational completions are `[{"role": "assistant", "content": …}]`).
fn answer(completion: &Value) -> Option<&str> {
    match completion {
        Value::String(text) => Some(text),
        Value::Array(messages) => messages.last().and_then(|m| m["content"].as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(input: &str, metric: Metric) -> Result<String> {
        let mut output = Vec::new();
        serve(input.as_bytes(), &mut output, metric)?;
        Ok(String::from_utf8(output).unwrap())
    }

    const FRANCE: &str = "What is the capital of France? Answer in one word.";

    #[test]
    fn each_request_gets_the_metric_asked_for() {
        let requests = [
            serde_json::json!({"prompt": FRANCE, "completion": "Paris"}),
            serde_json::json!({"prompt": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": FRANCE}],
                               "completion": [{"role": "assistant", "content": "Lyon"}],
                               "other": "ignored"}),
        ];
        let input = format!("{}\n\n{}\n", requests[0], requests[1]);
        assert_eq!(served(&input, Metric::Score).unwrap(), "1\n0.5\n");
        assert_eq!(served(&input, Metric::Correct).unwrap(), "1\n0\n");
        assert_eq!(served(&input, Metric::Form).unwrap(), "1\n1\n");
    }

    #[test]
    fn a_bad_request_names_its_line_and_field() {
        let err =
            served("\n{\"prompt\": \"Who are you?\", \"completion\": \"x\"}\n", Metric::Score);
        let err = format!("{:#}", err.unwrap_err());
        assert_eq!(
            err,
            "stdin line 2: field `prompt` is not one of the demo's prompts (see `rlhf demo data`)"
        );
        let err = served(&format!("{{\"prompt\": \"{FRANCE}\"}}"), Metric::Score).unwrap_err();
        assert!(format!("{err:#}").starts_with("stdin line 1: field `completion`"), "{err:#}");
        let err = served("Paris\n", Metric::Score).unwrap_err();
        assert!(format!("{err:#}").starts_with("stdin line 1: not a JSON request"), "{err:#}");
    }
}
