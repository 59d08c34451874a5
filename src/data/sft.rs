//! SFT rows → token ids with a loss mask.
//!
//! Conversations are rendered with the chat template one turn at a time, so each assistant
//! answer is located exactly and tokenized on its own: the loss covers the answer (and the
//! end-of-turn token that teaches the model to stop), never the prompt or the template's cue.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use super::chat::{Message, Role, parse_messages};
use super::template::ChatTemplate;

/// What happens to a row longer than `max_len`: its prompt is cut from the left (never the
/// response), or the row is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Truncation {
    Left,
    Drop,
}

/// One training sequence: token ids and which of them are targets of the loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    /// `true` where the token is predicted in the loss (the first token never is).
    pub target: Vec<bool>,
}

impl Example {
    pub fn target_count(&self) -> usize {
        self.target.iter().skip(1).filter(|&&t| t).count()
    }
}

/// A row of one of the three SFT forms.
#[derive(Debug, Clone, PartialEq)]
pub enum SftRow {
    /// `messages`, or `prompt` + `completion` as a user turn and an assistant turn.
    Chat(Vec<Message>),
    /// TRL's conversational prompt–completion row: the loss is on the completion's assistant
    /// turns only, not on answers inside the prompt.
    Completion { prompt: Vec<Message>, completion: Vec<Message> },
    /// `text`: continued pre-training, every token a target.
    Text(String),
}

impl SftRow {
    /// Parses and checks a row; the error names the field.
    pub fn parse(row: &Map<String, Value>) -> Result<Self, String> {
        let string = |field: &str| match row.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("field `{field}` must be a string")),
            None => Err(format!("field `{field}` is missing")),
        };
        let has = |field: &str| row.contains_key(field);
        if has("messages") {
            if has("prompt") || has("completion") || has("text") {
                return Err(
                    "a row has `messages`, or `prompt` + `completion`, or `text` — not several"
                        .into(),
                );
            }
            let messages = parse_messages(&row["messages"], "messages")?;
            if !messages.iter().any(|m| m.role == Role::Assistant) {
                return Err("field `messages` has no assistant turn to learn from".into());
            }
            for (i, m) in messages.iter().enumerate() {
                if m.role == Role::Assistant && m.content.trim().is_empty() {
                    return Err(format!("field `messages[{i}].content`: empty assistant turn"));
                }
            }
            return Ok(Self::Chat(messages));
        }
        if has("prompt") || has("completion") {
            if has("text") {
                return Err("a row has `prompt` + `completion` or `text`, not both".into());
            }
            if let Some(Value::Array(_)) = row.get("prompt") {
                return Self::conversational_completion(row);
            }
            let (prompt, completion) = (string("prompt")?, string("completion")?);
            if completion.trim().is_empty() {
                return Err("field `completion` is empty".into());
            }
            return Ok(Self::Chat(vec![
                Message::new(Role::User, prompt),
                Message::new(Role::Assistant, completion),
            ]));
        }
        if has("text") {
            let text = string("text")?;
            if text.trim().is_empty() {
                return Err("field `text` is empty".into());
            }
            return Ok(Self::Text(text));
        }
        Err(format!("expected `messages`, `prompt` + `completion`, or `text`{}", other_format(row)))
    }

    /// `{"prompt": [messages], "completion": [messages]}` (the completion may also be one
    /// string: the assistant's answer).
    fn conversational_completion(row: &Map<String, Value>) -> Result<Self, String> {
        let prompt = parse_messages(&row["prompt"], "prompt")?;
        let completion = match row.get("completion") {
            Some(Value::String(answer)) => vec![Message::new(Role::Assistant, answer.clone())],
            Some(value) => parse_messages(value, "completion")?,
            None => return Err("field `completion` is missing".into()),
        };
        if !completion.iter().any(|m| m.role == Role::Assistant && !m.content.trim().is_empty()) {
            return Err("field `completion` has no assistant turn to learn from".into());
        }
        Ok(Self::Completion { prompt, completion })
    }
}

/// A hint for rows in the formats other tools use, so the user learns the one-line
/// conversion instead of only that the row is wrong.
fn other_format(row: &Map<String, Value>) -> String {
    let has = |field: &str| row.contains_key(field);
    if has("instruction") && has("output") {
        return "\nhint: this is an Alpaca row; convert it with: jq -c '{prompt: (.instruction + (if .input != \"\" then \"\\n\\n\" + .input else \"\" end)), completion: .output}' FILE".into();
    }
    if has("conversations") {
        return "\nhint: this is a ShareGPT row; convert it with: jq -c '{messages: [.conversations[] | {role: ({human: \"user\", gpt: \"assistant\", system: \"system\"}[.from]), content: .value}]}' FILE".into();
    }
    String::new()
}

/// What encoding did to rows that did not fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FitReport {
    pub truncated: usize,
    pub dropped: usize,
}

/// Turns rows into examples of at most `max_len` tokens.
pub struct SftEncoder<'a> {
    pub tokenizer: &'a Tokenizer,
    pub template: &'a ChatTemplate,
    pub max_len: usize,
    pub truncation: Truncation,
    /// End of text: closes every `text` row (packed rows stay apart).
    pub eos: Option<u32>,
    /// Close assistant answers with `eos` too, for templates with no end-of-turn marker of
    /// their own (`hh`), so the model learns to stop.
    pub eos_after_answers: bool,
}

impl SftEncoder<'_> {
    /// `Ok(None)` when the row is dropped for length (and `report` counts it).
    pub fn encode(&self, row: &SftRow, report: &mut FitReport) -> Result<Option<Example>, String> {
        let example = match row {
            SftRow::Chat(messages) => self.encode_chat(messages, 0)?,
            SftRow::Completion { prompt, completion } => {
                let messages: Vec<Message> = prompt.iter().chain(completion).cloned().collect();
                self.encode_chat(&messages, prompt.len())?
            }
            SftRow::Text(text) => {
                let mut ids = self.tokens(text)?;
                ids.extend(self.eos);
                let target = vec![true; ids.len()];
                Example { ids, target }
            }
        };
        Ok(self.fit(example, matches!(row, SftRow::Text(_)), report))
    }

    /// The conversation with its assistant turns from `learn_from` on as targets.
    fn encode_chat(&self, messages: &[Message], learn_from: usize) -> Result<Example, String> {
        let last_answer = messages.iter().rposition(|m| m.role == Role::Assistant);
        let last_answer = last_answer.ok_or("the conversation has no assistant turn")?;
        let mut example = Example { ids: Vec::new(), target: Vec::new() };
        let mut rendered = String::new();
        let push = |text: &str, target: bool, example: &mut Example| -> Result<(), String> {
            let ids = self.tokens(text)?;
            example.target.extend(std::iter::repeat_n(target, ids.len()));
            example.ids.extend(ids);
            Ok(())
        };
        for i in 0..=last_answer {
            if messages[i].role == Role::Assistant {
                let cue = self.render(&messages[..i], true)?;
                push(self.continuation(&rendered, &cue)?, false, &mut example)?;
                let full = self.render(&messages[..=i], false)?;
                let learned = i >= learn_from;
                push(self.continuation(&cue, &full)?, learned, &mut example)?;
                if let Some(eos) = self.eos.filter(|_| self.eos_after_answers) {
                    example.ids.push(eos);
                    example.target.push(learned);
                }
                rendered = full;
            } else {
                let full = self.render(&messages[..=i], false)?;
                push(self.continuation(&rendered, &full)?, false, &mut example)?;
                rendered = full;
            }
        }
        Ok(example)
    }

    /// Keeps an example within `max_len`: a conversation loses tokens from its start (the
    /// prompt) as long as its last answer stays whole; a text row is cut at the end.
    fn fit(&self, mut example: Example, is_text: bool, report: &mut FitReport) -> Option<Example> {
        let excess = example.ids.len().saturating_sub(self.max_len);
        if excess == 0 {
            return Some(example);
        }
        let last_answer_start = example.target.iter().rposition(|&t| !t).map_or(0, |i| i + 1);
        let cut = match self.truncation {
            Truncation::Drop => None,
            Truncation::Left if is_text => {
                example.ids.truncate(self.max_len);
                example.target.truncate(self.max_len);
                report.truncated += 1;
                return Some(example);
            }
            Truncation::Left => (excess < last_answer_start).then_some(excess),
        };
        let Some(cut) = cut else {
            report.dropped += 1;
            return None;
        };
        example.ids.drain(..cut);
        example.target.drain(..cut);
        report.truncated += 1;
        Some(example)
    }

    fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, String> {
        self.template.render(messages, add_generation_prompt).map_err(|e| format!("{e:#}"))
    }

    /// The text `full` adds after `prefix`. Templates that do not render a conversation as an
    /// extension of its beginning cannot mark turns, and say so.
    fn continuation<'t>(&self, prefix: &str, full: &'t str) -> Result<&'t str, String> {
        full.strip_prefix(prefix).ok_or_else(|| {
            "the chat template does not render this conversation turn by turn (a later turn changes earlier text), so assistant answers cannot be located; use data.template = \"chatml\" or \"hh\"".to_string()
        })
    }

    fn tokens(&self, text: &str) -> Result<Vec<u32>, String> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| e.to_string())?;
        Ok(encoding.get_ids().to_vec())
    }
}

/// Concatenates `text` examples (each already ending with end-of-text) into blocks of exactly
/// `max_len` tokens, the last one shorter; the packed blocks learn every token.
pub fn pack(examples: Vec<Example>, max_len: usize) -> Vec<Example> {
    let stream: Vec<u32> = examples.into_iter().flat_map(|e| e.ids).collect();
    stream
        .chunks(max_len)
        .filter(|block| block.len() > 1)
        .map(|block| Example { ids: block.to_vec(), target: vec![true; block.len()] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::{CHATML_TEMPLATE, HH_TEMPLATE, IM_END, train_bpe};
    use serde_json::json;

    fn tokenizer() -> Tokenizer {
        let corpus = ["the cat sat on the mat", "hello there, how are you?", "fine thanks"];
        train_bpe(corpus.iter().copied(), 300).unwrap()
    }

    fn row(value: Value) -> Result<SftRow, String> {
        SftRow::parse(value.as_object().unwrap())
    }

    fn encoder<'a>(
        tok: &'a Tokenizer,
        template: &'a ChatTemplate,
        max_len: usize,
    ) -> SftEncoder<'a> {
        SftEncoder {
            tokenizer: tok,
            template,
            max_len,
            truncation: Truncation::Left,
            eos: None,
            eos_after_answers: false,
        }
    }

    fn decode_targets(tok: &Tokenizer, e: &Example) -> String {
        let ids: Vec<u32> =
            e.ids.iter().zip(&e.target).filter(|(_, t)| **t).map(|(i, _)| *i).collect();
        tok.decode(&ids, false).unwrap()
    }

    #[test]
    fn loss_covers_the_answer_and_end_of_turn_only() {
        let tok = tokenizer();
        let example = encoder(&tok, &ChatTemplate::ChatMl, 512)
            .encode(
                &row(json!({"prompt": "hello there", "completion": "fine thanks"})).unwrap(),
                &mut FitReport::default(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(decode_targets(&tok, &example), format!("fine thanks{IM_END}\n"));
        let all = tok.decode(&example.ids, false).unwrap();
        assert_eq!(
            all,
            format!(
                "<|im_start|>user\nhello there{IM_END}\n<|im_start|>assistant\nfine thanks{IM_END}\n"
            )
        );
    }

    #[test]
    fn every_assistant_turn_is_learned_and_jinja_marks_the_same_tokens() {
        let tok = tokenizer();
        let chat = row(json!({"messages": [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hello there"},
            {"role": "user", "content": "how are you?"},
            {"role": "assistant", "content": "fine"},
        ]}))
        .unwrap();
        let rust = encoder(&tok, &ChatTemplate::ChatMl, 512)
            .encode(&chat, &mut FitReport::default())
            .unwrap();
        let jinja = ChatTemplate::Model {
            source: CHATML_TEMPLATE.into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let via_jinja =
            encoder(&tok, &jinja, 512).encode(&chat, &mut FitReport::default()).unwrap();
        assert_eq!(rust, via_jinja);
        let example = rust.unwrap();
        assert_eq!(decode_targets(&tok, &example), format!("hello there{IM_END}\nfine{IM_END}\n"));
    }

    #[test]
    fn hh_appends_end_of_text_as_a_target() {
        let tok = tokenizer();
        let mut enc = encoder(&tok, &ChatTemplate::Hh, 512);
        enc.eos = Some(0);
        enc.eos_after_answers = true;
        let example = enc
            .encode(
                &row(json!({"prompt": "hello", "completion": "fine"})).unwrap(),
                &mut FitReport::default(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            tok.decode(&example.ids, false).unwrap(),
            "\n\nHuman: hello\n\nAssistant: fine<|endoftext|>"
        );
        assert_eq!(decode_targets(&tok, &example), " fine<|endoftext|>");
    }

    #[test]
    fn the_hh_template_saved_with_a_checkpoint_marks_the_same_tokens() {
        let tok = tokenizer();
        let chat = row(json!({"messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hello there"},
            {"role": "user", "content": "how are you?"},
            {"role": "assistant", "content": "fine"},
        ]}))
        .unwrap();
        let mut rust = encoder(&tok, &ChatTemplate::Hh, 512);
        rust.eos = Some(0);
        rust.eos_after_answers = true;
        let jinja = ChatTemplate::Model {
            source: HH_TEMPLATE.into(),
            bos_token: String::new(),
            eos_token: "<|endoftext|>".into(),
        };
        let saved = encoder(&tok, &jinja, 512);
        let mut report = FitReport::default();
        assert_eq!(
            rust.encode(&chat, &mut report).unwrap(),
            saved.encode(&chat, &mut report).unwrap()
        );
    }

    #[test]
    fn long_prompts_lose_their_start_and_long_answers_drop() {
        let tok = tokenizer();
        let long =
            row(json!({"prompt": "the cat sat on the mat ".repeat(20), "completion": "fine"}))
                .unwrap();
        let full = encoder(&tok, &ChatTemplate::ChatMl, 4096)
            .encode(&long, &mut FitReport::default())
            .unwrap()
            .unwrap();
        let mut report = FitReport::default();
        let cut =
            encoder(&tok, &ChatTemplate::ChatMl, 30).encode(&long, &mut report).unwrap().unwrap();
        assert_eq!(cut.ids.len(), 30);
        assert_eq!(cut.ids[..], full.ids[full.ids.len() - 30..]);
        assert_eq!(decode_targets(&tok, &cut), decode_targets(&tok, &full));
        assert_eq!(report, FitReport { truncated: 1, dropped: 0 });

        let answer =
            row(json!({"prompt": "hi", "completion": "the cat sat on the mat ".repeat(20)}))
                .unwrap();
        let mut report = FitReport::default();
        assert_eq!(
            encoder(&tok, &ChatTemplate::ChatMl, 30).encode(&answer, &mut report).unwrap(),
            None
        );
        let mut dropping = encoder(&tok, &ChatTemplate::ChatMl, 30);
        dropping.truncation = Truncation::Drop;
        assert_eq!(dropping.encode(&long, &mut report).unwrap(), None);
        assert_eq!(report, FitReport { truncated: 0, dropped: 2 });
    }

    #[test]
    fn packing_fills_blocks() {
        let examples = vec![
            Example { ids: vec![1, 2, 3, 0], target: vec![true; 4] },
            Example { ids: vec![4, 5, 0], target: vec![true; 3] },
        ];
        let blocks = pack(examples, 3);
        let ids: Vec<Vec<u32>> = blocks.iter().map(|b| b.ids.clone()).collect();
        assert_eq!(ids, [vec![1, 2, 3], vec![0, 4, 5]]); // a 1-token tail predicts nothing
    }

    #[test]
    fn row_errors_name_the_field() {
        let cases = [
            (json!({"prompt": "q"}), "field `completion` is missing"),
            (json!({"prompt": "q", "completion": " "}), "field `completion` is empty"),
            (
                json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}),
                "field `messages[1].content`: empty assistant turn",
            ),
            (json!({"messages": [{"role": "robot", "content": "q"}]}), "unknown role \"robot\""),
            (json!({"messages": [{"role": "user", "content": "q"}]}), "no assistant turn"),
            (json!({"text": 3}), "field `text` must be a string"),
            (json!({"question": "q"}), "expected `messages`, `prompt` + `completion`, or `text`"),
        ];
        for (value, expected) in cases {
            let err = row(value.clone()).unwrap_err();
            assert!(err.contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn trl_conversational_prompt_completion_learns_the_completion_only() {
        let tok = tokenizer();
        let parsed = row(json!({
            "prompt": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hello there"},
                {"role": "user", "content": "how are you?"},
            ],
            "completion": [{"role": "assistant", "content": "fine thanks"}],
        }))
        .unwrap();
        let example =
            encoder(&tok, &ChatTemplate::ChatMl, 512).encode(&parsed, &mut FitReport::default());
        let example = example.unwrap().unwrap();
        assert_eq!(decode_targets(&tok, &example), format!("fine thanks{IM_END}\n"));
        let plain =
            row(json!({"prompt": [{"role": "user", "content": "hi"}], "completion": "fine"}));
        assert!(matches!(plain, Ok(SftRow::Completion { .. })), "{plain:?}");
    }

    #[test]
    fn alpaca_and_sharegpt_rows_get_the_conversion_as_a_hint() {
        let alpaca = row(json!({"instruction": "Add", "input": "2+2", "output": "4"}));
        assert!(alpaca.unwrap_err().contains("this is an Alpaca row"));
        let sharegpt = row(json!({"conversations": [{"from": "human", "value": "hi"}]}));
        assert!(sharegpt.unwrap_err().contains("this is a ShareGPT row"));
    }
}
