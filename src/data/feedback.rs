//! KTO rows: one answer to a prompt with a thumbs up or down — TRL's unpaired preference form
//! `{"prompt": …, "completion": …, "label": true|false}`, the prompt a string (an HH
//! transcript is read as turns) or a message list ending with a user turn, the completion a
//! string or a list holding the one assistant answer. A comparison row (`chosen` +
//! `rejected`, any form `rlhf reward` reads) counts as two rows, the chosen answer desirable
//! and the rejected one not (TRL's `unpair_preference_dataset`).

use serde_json::{Map, Value};

use super::chat::{Message, Role, parse_messages};
use super::preference::{Comparison, prompt_field};

/// One answer judged good (`desirable`) or bad.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// The conversation so far, ending with a user turn.
    pub prompt: Vec<Message>,
    pub answer: String,
    pub desirable: bool,
}

impl Feedback {
    /// Parses and checks a row (one or, for a comparison, two answers); the error names the
    /// field.
    pub fn parse(row: &Map<String, Value>) -> Result<Vec<Self>, String> {
        if row.contains_key("chosen") || row.contains_key("rejected") {
            if row.contains_key("completion") || row.contains_key("label") {
                return Err(
                    "a row has `completion` + `label`, or `chosen` + `rejected`, not both".into()
                );
            }
            let comparison = Comparison::parse(row)?;
            let [chosen, rejected] = <[String; 2]>::try_from(comparison.responses)
                .map_err(|_| "a ranking of more than two responses".to_string())?;
            let prompt = comparison.prompt;
            return Ok(vec![
                Self { prompt: prompt.clone(), answer: chosen, desirable: true },
                Self { prompt, answer: rejected, desirable: false },
            ]);
        }
        if row.contains_key("responses") {
            return Err("a ranking (`responses`) has no thumbs up or down for KTO\nhint: use `rlhf dpo train`, which learns from rankings, or give rows {\"prompt\", \"completion\", \"label\": true|false}".into());
        }
        let desirable = match row.get("label") {
            Some(Value::Bool(label)) => *label,
            Some(_) => {
                return Err(
                    "field `label` must be true (a good answer) or false (a bad one)".into()
                );
            }
            None => {
                return Err(
                    "field `label` is missing (true for a good answer, false for a bad one)".into(),
                );
            }
        };
        let prompt = prompt_field(row)?.ok_or("field `prompt` is missing")?;
        let answer = match row.get("completion") {
            Some(Value::String(answer)) => answer.clone(),
            Some(value @ Value::Array(_)) => {
                match parse_messages(value, "completion")?.as_slice() {
                    [only] if only.role == Role::Assistant => only.content.clone(),
                    _ => {
                        return Err(
                            "field `completion` must hold the one assistant answer being judged"
                                .into(),
                        );
                    }
                }
            }
            Some(_) => return Err("field `completion` must be a string or a message list".into()),
            None => return Err("field `completion` is missing".into()),
        };
        Ok(vec![Self { prompt, answer, desirable }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(row: Value) -> Result<Vec<Feedback>, String> {
        Feedback::parse(row.as_object().unwrap())
    }

    #[test]
    fn trl_unpaired_rows_in_both_forms() {
        let plain = parse(json!({"prompt": "q", "completion": "a", "label": true})).unwrap();
        assert_eq!(
            plain,
            [Feedback {
                prompt: vec![Message::new(Role::User, "q")],
                answer: "a".into(),
                desirable: true
            }]
        );
        let conversational = parse(json!({
            "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            "completion": [{"role": "assistant", "content": "a"}],
            "label": false,
        }))
        .unwrap();
        assert_eq!(conversational[0].prompt.len(), 2);
        assert_eq!((conversational[0].answer.as_str(), conversational[0].desirable), ("a", false));
    }

    #[test]
    fn a_comparison_is_a_good_and_a_bad_answer() {
        let rows = parse(json!({"prompt": "q", "chosen": "good", "rejected": "bad"})).unwrap();
        let judged: Vec<(&str, bool)> =
            rows.iter().map(|f| (f.answer.as_str(), f.desirable)).collect();
        assert_eq!(judged, [("good", true), ("bad", false)]);
    }

    #[test]
    fn errors_name_the_field() {
        let error = |row: Value| parse(row).unwrap_err();
        assert!(error(json!({"prompt": "q", "completion": "a"})).contains("`label` is missing"));
        assert!(
            error(json!({"prompt": "q", "completion": "a", "label": 1}))
                .contains("`label` must be true")
        );
        assert!(error(json!({"completion": "a", "label": true})).contains("`prompt` is missing"));
        assert!(error(json!({"prompt": "q", "label": true})).contains("`completion` is missing"));
        let two =
            json!([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]);
        assert!(
            error(json!({"prompt": "q", "completion": two, "label": true}))
                .contains("the one assistant answer")
        );
        assert!(error(json!({"prompt": "q", "responses": ["a", "b"]})).contains("ranking"));
    }
}
