//! Reward-model rows: a prompt and two or more responses ranked best first.
//!
//! Four forms (DESIGN.md): `prompt` + `chosen` + `rejected`; `chosen` + `rejected` as whole
//! transcripts that share their beginning (Anthropic HH: `\n\nHuman: …\n\nAssistant: …`);
//! `prompt` + `responses` (an InstructGPT ranking, best first); and `chosen`/`rejected` as
//! message lists. A ranking of K responses gives all K·(K−1)/2 ordered pairs, weighted
//! 1/(K·(K−1)/2) so that each prompt counts once however many responses it ranks — InstructGPT
//! trains on all pairs of a prompt together for that reason (Ouyang et al., 2022, §3.5).

use std::path::Path;

use anyhow::Result;
use serde_json::{Map, Value};

use super::chat::{Message, Role, parse_messages};
use super::jsonl::read_rows;
use super::sft::FitReport;

const HUMAN: &str = "\n\nHuman:";
const ASSISTANT: &str = "\n\nAssistant:";

/// One prompt with its responses, best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The conversation so far, ending with a user turn.
    pub prompt: Vec<Message>,
    /// Two or more responses, best first.
    pub responses: Vec<String>,
    /// Required reward gap between chosen and rejected (`margin`, two responses only).
    pub margin: Option<f64>,
}

/// A preferred response (index into `responses`) over a worse one, with its loss weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    pub better: usize,
    pub worse: usize,
    pub weight: f64,
}

impl Comparison {
    /// Parses and checks a row; the error names the field.
    pub fn parse(row: &Map<String, Value>) -> Result<Self, String> {
        let margin = match row.get("margin") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_f64(),
            Some(_) => return Err("field `margin` must be a number".into()),
        };
        if let Some(responses) = row.get("responses") {
            if row.contains_key("chosen") || row.contains_key("rejected") {
                return Err(
                    "a row has `responses` (a ranking) or `chosen` + `rejected`, not both".into()
                );
            }
            if margin.is_some() {
                return Err("field `margin` goes with `chosen` + `rejected`, not a ranking".into());
            }
            let prompt =
                prompt_field(row)?.ok_or("field `prompt` is missing (a ranking needs one)")?;
            let Value::Array(items) = responses else {
                return Err("field `responses` must be a list of strings, best first".into());
            };
            let responses = items
                .iter()
                .enumerate()
                .map(|(i, r)| match r {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(format!("field `responses[{i}]` must be a string")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if responses.len() < 2 {
                return Err("field `responses` must rank at least two responses".into());
            }
            return Ok(Self { prompt, responses, margin });
        }
        let (chosen, rejected) = match (row.get("chosen"), row.get("rejected")) {
            (Some(c), Some(r)) => (c, r),
            (None, _) => return Err("field `chosen` is missing (or give `responses`)".into()),
            (_, None) => return Err("field `rejected` is missing".into()),
        };
        let (prompt, responses) = match (prompt_field(row)?, chosen, rejected) {
            (Some(prompt), Value::String(c), Value::String(r)) => {
                (prompt, vec![c.clone(), r.clone()])
            }
            (None, Value::String(c), Value::String(r)) => split_transcripts(c, r)?,
            (prompt, Value::Array(_), Value::Array(_)) => {
                let chosen = parse_messages(chosen, "chosen")?;
                let rejected = parse_messages(rejected, "rejected")?;
                split_conversations(prompt, chosen, rejected)?
            }
            _ => {
                return Err(
                    "fields `chosen` and `rejected` must both be strings or both message lists"
                        .into(),
                );
            }
        };
        // An empty response is allowed: HH-RLHF prefers saying nothing to some harmful answers.
        Ok(Self { prompt, responses, margin })
    }

    /// Every (better, worse) pair of the ranking, weighted so the pairs of one prompt sum to 1.
    pub fn pairs(&self) -> Vec<Pair> {
        let k = self.responses.len();
        let weight = 1.0 / (k * (k - 1) / 2) as f64;
        (0..k)
            .flat_map(|better| (better + 1..k).map(move |worse| Pair { better, worse, weight }))
            .collect()
    }
}

/// A comparison with its responses encoded (as token ids, sequences, …), best first.
pub type Encoded<T> = (Comparison, Vec<T>);

/// Every comparison of `path` with each of its responses encoded by `encode` (prompt,
/// response, report → `None` when it does not fit). A comparison one of whose responses does
/// not fit is dropped whole, and counted; a bad row is an error naming `FILE:LINE`.
pub fn encode_comparisons<T>(
    path: &Path,
    mut encode: impl FnMut(&[Message], &str, &mut FitReport) -> Result<Option<T>, String>,
) -> Result<(Vec<Encoded<T>>, FitReport)> {
    let mut report = FitReport::default();
    let mut encoded = Vec::new();
    for row in read_rows(path)? {
        let at = row.error_at(path);
        let comparison = Comparison::parse(&row.fields).map_err(&at)?;
        let mut responses = Vec::new();
        let mut fit = FitReport::default();
        for response in &comparison.responses {
            if let Some(done) = encode(&comparison.prompt, response, &mut fit).map_err(&at)? {
                responses.push(done);
            }
        }
        if responses.len() == comparison.responses.len() {
            report.truncated += usize::from(fit.truncated > 0);
            encoded.push((comparison, responses));
        } else {
            report.dropped += 1;
        }
    }
    Ok((encoded, report))
}

/// `prompt` as a conversation: a string (an HH transcript ending with `Assistant:` is read as
/// turns, anything else is one user turn) or a message list.
pub fn prompt_field(row: &Map<String, Value>) -> Result<Option<Vec<Message>>, String> {
    let messages = match row.get("prompt") {
        None => return Ok(None),
        Some(Value::String(text)) if is_transcript(text) => {
            let body = text.trim_end().strip_suffix(ASSISTANT.trim_start()).unwrap_or(text);
            transcript_turns(body.trim_end_matches(['\n', ' ']))
        }
        Some(Value::String(text)) => vec![Message::new(Role::User, text.clone())],
        Some(value @ Value::Array(_)) => parse_messages(value, "prompt")?,
        Some(_) => return Err("field `prompt` must be a string or a message list".into()),
    };
    match messages.last() {
        Some(m) if m.role == Role::User => Ok(Some(messages)),
        Some(_) => Err("field `prompt`: the conversation must end with a user turn".into()),
        None => Err("field `prompt` is empty".into()),
    }
}

fn is_transcript(text: &str) -> bool {
    text.starts_with(HUMAN) || text.starts_with(HUMAN.trim_start())
}

/// Two HH transcripts → their shared prompt and the two final answers. The prompt ends at the
/// last `\n\nAssistant:` both share (an answer may itself contain that marker).
fn split_transcripts(chosen: &str, rejected: &str) -> Result<(Vec<Message>, Vec<String>), String> {
    let common = chosen.bytes().zip(rejected.bytes()).take_while(|(a, b)| a == b).count();
    let shared = &chosen[..floor_char_boundary(chosen, common)];
    let cut = shared.rfind(ASSISTANT).ok_or(
        "fields `chosen` and `rejected` share no `\\n\\nAssistant:` turn; give `prompt` separately, or full transcripts that differ only in the last answer",
    )?;
    let prompt = transcript_turns(&chosen[..cut]);
    if prompt.last().is_none_or(|m| m.role != Role::User) {
        return Err("fields `chosen`/`rejected`: the shared transcript must end with a Human turn before the last `Assistant:`".into());
    }
    let answer = |text: &str| text[cut + ASSISTANT.len()..].trim_start().to_string();
    Ok((prompt, vec![answer(chosen), answer(rejected)]))
}

/// `\n\nHuman: …\n\nAssistant: …` → turns. Text before the first marker is a system turn.
fn transcript_turns(text: &str) -> Vec<Message> {
    let mut turns = Vec::new();
    let mut rest = text;
    let mut role = Role::System;
    loop {
        let next =
            [(HUMAN, Role::User), (ASSISTANT, Role::Assistant)]
                .into_iter()
                .filter_map(|(marker, r)| rest.find(marker).map(|at| (at, marker, r)))
                .min_by_key(|(at, _, _)| *at)
                .or_else(|| {
                    // A transcript may start without its leading blank line.
                    let bare = HUMAN.trim_start();
                    (turns.is_empty() && role == Role::System && rest.starts_with(bare))
                        .then_some((0, bare, Role::User))
                });
        let (end, marker, next_role) = match next {
            Some(found) => found,
            None => (rest.len(), "", role),
        };
        let content = rest[..end].trim();
        if !(role == Role::System && content.is_empty()) {
            turns.push(Message::new(role, content));
        }
        if marker.is_empty() {
            return turns;
        }
        rest = &rest[end + marker.len()..];
        role = next_role;
    }
}

/// Two message lists → the shared prompt and the two final assistant answers. With a separate
/// `prompt`, each list is the answer alone (TRL's conversational form).
fn split_conversations(
    prompt: Option<Vec<Message>>,
    chosen: Vec<Message>,
    rejected: Vec<Message>,
) -> Result<(Vec<Message>, Vec<String>), String> {
    let (prompt, shared) = match prompt {
        Some(prompt) => (prompt, 0),
        None => {
            let shared = chosen.len().saturating_sub(1);
            if shared == 0
                || rejected.len() != chosen.len()
                || chosen[..shared] != rejected[..shared]
            {
                return Err("fields `chosen` and `rejected` must be the same conversation up to their last (assistant) message".into());
            }
            let prompt = chosen[..shared].to_vec();
            if prompt.last().is_none_or(|m| m.role != Role::User) {
                return Err(
                    "fields `chosen`/`rejected`: the shared conversation must end with a user turn"
                        .into(),
                );
            }
            (prompt, shared)
        }
    };
    let answer = |list: &[Message], field: &str| match &list[shared.min(list.len())..] {
        [last] if last.role == Role::Assistant => Ok(last.content.clone()),
        _ => Err(format!(
            "field `{field}` must end with the one assistant answer being compared, after the shared prompt"
        )),
    };
    Ok((prompt, vec![answer(&chosen, "chosen")?, answer(&rejected, "rejected")?]))
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(row: Value) -> Result<Comparison, String> {
        Comparison::parse(row.as_object().unwrap())
    }

    fn user(text: &str) -> Message {
        Message::new(Role::User, text)
    }

    #[test]
    fn a_ranking_of_four_gives_six_pairs_that_weigh_one_prompt() {
        let row = parse(json!({"prompt": "p", "responses": ["a", "b", "c", "d"]})).unwrap();
        let pairs = row.pairs();
        let ordered: Vec<(usize, usize)> = pairs.iter().map(|p| (p.better, p.worse)).collect();
        assert_eq!(ordered, [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]);
        assert!(pairs.iter().all(|p| (p.weight - 1.0 / 6.0).abs() < 1e-12));
        assert!((pairs.iter().map(|p| p.weight).sum::<f64>() - 1.0).abs() < 1e-12);
        let two = parse(json!({"prompt": "p", "chosen": "a", "rejected": "b"})).unwrap();
        assert_eq!(two.pairs(), [Pair { better: 0, worse: 1, weight: 1.0 }]);
    }

    #[test]
    fn hh_transcripts_split_at_the_last_shared_assistant_turn() {
        let row = parse(json!({
            "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: No.",
            "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: a joke?\n\nAssistant: Sure!",
        }))
        .unwrap();
        let hello = Message::new(Role::Assistant, "hello");
        assert_eq!(row.prompt, [user("hi"), hello, user("a joke?")]);
        assert_eq!(row.responses, ["No.", "Sure!"]);

        // An answer that itself contains the marker: the prompt stops where the two part.
        let row = parse(json!({
            "chosen": "\n\nHuman: q\n\nAssistant: one\n\nAssistant: two",
            "rejected": "\n\nHuman: q\n\nAssistant: other",
        }))
        .unwrap();
        assert_eq!(row.prompt, [user("q")]);
        assert_eq!(row.responses, ["one\n\nAssistant: two", "other"]);
    }

    #[test]
    fn message_lists_and_prompt_transcripts() {
        let conversation = |answer: &str| json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]);
        let row = parse(json!({"chosen": conversation("good"), "rejected": conversation("bad")}))
            .unwrap();
        assert_eq!(
            (row.prompt, row.responses),
            (vec![user("q")], vec!["good".into(), "bad".into()])
        );

        let row = parse(json!({
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "margin": 2,
        }))
        .unwrap();
        assert_eq!((row.responses.len(), row.margin), (2, Some(2.0)));

        let row =
            parse(json!({"prompt": "\n\nHuman: q\n\nAssistant:", "chosen": "a", "rejected": "b"}))
                .unwrap();
        assert_eq!(row.prompt, [user("q")]);
    }

    #[test]
    fn errors_name_the_field() {
        let error = |row: Value| parse(row).unwrap_err();
        assert!(error(json!({"prompt": "p", "chosen": "a"})).contains("`rejected` is missing"));
        assert!(error(json!({"prompt": "p", "responses": ["a"]})).contains("at least two"));
        assert!(error(json!({"prompt": "p", "responses": ["a", 3]})).contains("`responses[1]`"));
        assert!(error(json!({"chosen": "x", "rejected": "y"})).contains("share no"));
        assert!(
            error(json!({"prompt": "p", "chosen": "a", "rejected": "b", "margin": "1"}))
                .contains("`margin`")
        );
        let mismatch = json!({
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}],
        });
        assert!(error(mismatch).contains("same conversation"));
    }
}
