//! Chat templates: how a conversation becomes the text a model reads.
//!
//! `chatml` (`<|im_start|>role\n…<|im_end|>\n`), `hh` (Anthropic's `\n\nHuman: …\n\nAssistant: …`
//! transcripts), `model` (the Jinja `chat_template` that came with the tokenizer, rendered with
//! minijinja as `transformers` renders it), and `raw` (a prompt's text as it is).

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::chat::{Message, Role};
use super::tokenizer::{CHATML_TEMPLATE, HH_TEMPLATE, IM_END, IM_START, configured_token};
use crate::{bad_input, json_file};

/// Template instructions one render may run: a long conversation needs a few thousand.
const TEMPLATE_FUEL: u64 = 10_000_000;

#[derive(Debug, Clone)]
pub enum ChatTemplate {
    ChatMl,
    Hh,
    Model { source: String, bos_token: String, eos_token: String },
    Raw,
}

impl ChatTemplate {
    /// `name` as a user gave it (`chatml`, `hh`, `model`, `raw`); `None` picks the model's own
    /// template when its tokenizer has one, else ChatML.
    pub fn resolve(name: Option<&str>, model_dir: &Path) -> Result<Self> {
        let own = model_template(model_dir);
        Ok(match (name, own) {
            (Some("chatml"), _) => Self::ChatMl,
            (Some("hh"), _) => Self::Hh,
            (Some("raw"), _) => Self::Raw,
            (Some("model") | None, Some(template)) => template,
            (None, None) => Self::ChatMl,
            (Some("model"), None) => {
                return Err(bad_input!(
                    "{}: the tokenizer has no chat_template (in tokenizer_config.json or chat_template.jinja)\nhint: use --template chatml or hh",
                    model_dir.display()
                ));
            }
            (Some(other), _) => {
                return Err(bad_input!(
                    "unknown chat template `{other}` (expected chatml, hh, model or raw)"
                ));
            }
        })
    }

    /// The Jinja source to save with a checkpoint trained with a built-in template, so that
    /// `model` (and `transformers`) later format prompts the same way; `None` for the model's
    /// own template (already in its tokenizer files) and `raw`.
    pub fn builtin_source(&self) -> Option<&'static str> {
        match self {
            Self::ChatMl => Some(CHATML_TEMPLATE),
            Self::Hh => Some(HH_TEMPLATE),
            Self::Model { .. } | Self::Raw => None,
        }
    }

    /// The token ids a model continues to answer `messages`: rendered with the assistant's cue
    /// and encoded (the templates write their own special tokens; `raw` text gets the
    /// tokenizer's).
    pub fn encode_prompt(
        &self,
        tokenizer: &tokenizers::Tokenizer,
        messages: &[Message],
    ) -> Result<Vec<u32>, String> {
        let text = self.render(messages, true).map_err(|e| format!("{e:#}"))?;
        let raw = matches!(self, Self::Raw);
        let encoding = tokenizer.encode(text.as_str(), raw).map_err(|e| e.to_string())?;
        match encoding.get_ids() {
            [] => Err("the prompt encodes to no tokens".into()),
            ids => Ok(ids.to_vec()),
        }
    }

    /// The text for `messages`, ending with the assistant's cue when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        Ok(match self {
            Self::ChatMl => {
                let mut text: String = messages
                    .iter()
                    .map(|m| format!("{IM_START}{}\n{}{IM_END}\n", m.role.as_str(), m.content))
                    .collect();
                if add_generation_prompt {
                    text.push_str(&format!("{IM_START}assistant\n"));
                }
                text
            }
            Self::Hh => {
                let mut text = String::new();
                for m in messages {
                    match m.role {
                        Role::System => text.push_str(&m.content),
                        Role::User => text.push_str(&format!("\n\nHuman: {}", m.content)),
                        Role::Assistant => text.push_str(&format!("\n\nAssistant: {}", m.content)),
                    }
                }
                if add_generation_prompt {
                    text.push_str("\n\nAssistant:");
                }
                text
            }
            Self::Model { source, bos_token, eos_token } => {
                let mut env = minijinja::Environment::new();
                // A template comes with a downloaded tokenizer: one that loops without end
                // runs out of fuel instead of hanging the chat.
                env.set_fuel(Some(TEMPLATE_FUEL));
                minijinja_contrib::add_to_environment(&mut env);
                env.set_unknown_method_callback(
                    minijinja_contrib::pycompat::unknown_method_callback,
                );
                env.add_function(
                    "raise_exception",
                    |message: String| -> Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, message))
                    },
                );
                let context = minijinja::context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => bos_token,
                    eos_token => eos_token,
                };
                env.render_str(source, context).map_err(|e| bad_input!("chat template: {e}"))?
            }
            Self::Raw => match messages {
                [only] => only.content.clone(),
                _ => {
                    return Err(bad_input!(
                        "the raw template takes a single prompt, not a conversation\nhint: use --template chatml, hh or model"
                    ));
                }
            },
        })
    }
}

/// The model's own template: `chat_template.jinja` (transformers 5.x) or `chat_template` in
/// `tokenizer_config.json` (4.x; a string, or a list of named templates with a `default`).
fn model_template(dir: &Path) -> Option<ChatTemplate> {
    let config = json_file::read_optional(&dir.join("tokenizer_config.json"));
    let source = std::fs::read_to_string(dir.join("chat_template.jinja")).ok().or_else(|| {
        match config.get("chat_template")? {
            Value::String(s) => Some(s.clone()),
            Value::Array(named) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(String::from)),
            _ => None,
        }
    })?;
    let token = |key: &str| configured_token(&config, key).unwrap_or_default().to_string();
    Some(ChatTemplate::Model {
        source,
        bos_token: token("bos_token"),
        eos_token: token("eos_token"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::CHATML_TEMPLATE;

    fn model(source: &str) -> ChatTemplate {
        ChatTemplate::Model {
            source: source.into(),
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
        }
    }

    /// Found by `scripts/fuzz.sh` (chat_template): a broken loop whose report, with debug
    /// info, overflowed inside minijinja. Now an error naming the line.
    #[test]
    fn a_broken_template_is_an_error_naming_the_line() {
        let source = "{{ bos_token }}{% for in messages %}{{ m['content'] }}\n{% endfor %}";
        let err = model(source).render(&conversation(), true).unwrap_err().to_string();
        assert!(err.starts_with("chat template: cannot unpack"), "{err}");
        assert!(err.ends_with("(in <string>:1)"), "{err}");
    }

    #[test]
    fn a_template_that_never_ends_runs_out_of_fuel() {
        let source =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = model(source).render(&conversation(), true).unwrap_err().to_string();
        assert!(err.contains("fuel"), "{err}");
    }

    fn conversation() -> Vec<Message> {
        vec![
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello."),
            Message::new(Role::User, "Bye"),
        ]
    }

    #[test]
    fn chatml_in_rust_equals_the_jinja_template_we_ship() {
        let jinja = ChatTemplate::Model {
            source: CHATML_TEMPLATE.into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        for add in [false, true] {
            assert_eq!(
                ChatTemplate::ChatMl.render(&conversation(), add).unwrap(),
                jinja.render(&conversation(), add).unwrap()
            );
        }
    }

    #[test]
    fn hh_transcript() {
        let text = ChatTemplate::Hh.render(&conversation()[1..], true).unwrap();
        assert_eq!(text, "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Bye\n\nAssistant:");
    }

    #[test]
    fn template_errors_are_bad_input() {
        let strict = ChatTemplate::Model {
            source: "{% if messages[0].role == 'system' %}{{ raise_exception('no system role') }}{% endif %}".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let err = strict.render(&conversation(), true).unwrap_err();
        assert!(format!("{err:#}").contains("no system role"), "{err:#}");
        assert!(ChatTemplate::Raw.render(&conversation(), true).is_err());
    }
}
