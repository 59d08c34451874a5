//! Chat templates: a Jinja source (as a tokenizer may carry) and a conversation, NUL-separated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rlhf::data::chat::{Message, Role};
use rlhf::data::template::ChatTemplate;

fuzz_target!(|text: &str| {
    let (source, rest) = text.split_once('\0').unwrap_or((text, ""));
    let roles = [Role::System, Role::User, Role::Assistant, Role::User];
    let messages: Vec<Message> =
        rest.split('\0').zip(roles.iter().cycle()).map(|(c, &r)| Message::new(r, c)).collect();
    let model = ChatTemplate::Model {
        source: source.to_string(),
        bos_token: "<s>".into(),
        eos_token: "</s>".into(),
    };
    for template in [model, ChatTemplate::ChatMl, ChatTemplate::Hh, ChatTemplate::Raw] {
        let _ = template.render(&messages, true);
        let _ = template.render(&messages[..1], false);
    }
});
