//! The context window: which messages the model reads on a turn.
//!
//! The prompt must leave `max_new_tokens` of room in the window. When the conversation does not
//! fit, whole turns (a user message and the answers after it) are left out from the oldest on;
//! the system message and the newest user message always stay. When those two alone do not
//! fit, the newest user message is cut (its end is kept: the question usually follows the
//! pasted text), and only a system message longer than the window itself is cut too (its start
//! is kept). The history itself is never changed: `/save` and `--log` keep every message.

use anyhow::Result;

use crate::bad_input;
use crate::data::chat::{Message, Role};

/// Token counts and cuts, as the model's tokenizer and chat template see them.
pub trait Measure {
    /// Tokens of the prompt rendered from `messages` (with the assistant's cue).
    fn prompt_len(&mut self, messages: &[Message]) -> Result<usize>;
    /// Tokens of `text` alone.
    fn text_len(&mut self, text: &str) -> Result<usize>;
    /// `text` cut to about `keep` tokens, keeping its end (`keep_end`) or its start.
    fn cut(&mut self, text: &str, keep: usize, keep_end: bool) -> Result<String>;
}

/// What the model reads this turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    pub messages: Vec<Message>,
    /// Whole turns left out, oldest first.
    pub dropped_turns: usize,
    /// The messages that had to be cut (the newest user message, maybe the system message).
    pub cut: Vec<Role>,
}

/// Fits `history` (system message first if any, ending with the user message to answer) into
/// `budget` prompt tokens.
pub fn fit(history: &[Message], budget: usize, measure: &mut dyn Measure) -> Result<Fit> {
    let system = usize::from(history.first().is_some_and(|m| m.role == Role::System));
    // Where each turn starts; the last one is the newest user message's.
    let starts: Vec<usize> =
        (system..history.len()).filter(|&i| i == system || history[i].role == Role::User).collect();
    let Some(&newest) = starts.last() else {
        return Err(bad_input!("the conversation has no user message to answer"));
    };
    let keeping = |k: usize| [&history[..system], &history[starts[k]..]].concat();

    if measure.prompt_len(history)? <= budget {
        return Ok(Fit { messages: history.to_vec(), dropped_turns: 0, cut: Vec::new() });
    }
    // Fewer turns never take more tokens: find the fewest drops that fit by bisection.
    let (mut lo, mut hi) = (1, starts.len() - 1); // drops: lo..=hi, hi keeps only the newest
    if lo <= hi && measure.prompt_len(&keeping(hi))? <= budget {
        while lo < hi {
            let mid = (lo + hi) / 2;
            if measure.prompt_len(&keeping(mid))? <= budget {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        return Ok(Fit { messages: keeping(hi), dropped_turns: hi, cut: Vec::new() });
    }
    let mut messages = [&history[..system], &history[newest..]].concat();
    let dropped_turns = starts.len() - 1;
    let mut cut = Vec::new();
    // A cut moves token boundaries, so measure again after each one.
    for _ in 0..8 {
        let len = measure.prompt_len(&messages)?;
        if len <= budget {
            return Ok(Fit { messages, dropped_turns, cut });
        }
        let excess = len - budget;
        let last = messages.len() - 1;
        let user_len = measure.text_len(&messages[last].content)?;
        if user_len > excess {
            messages[last].content =
                measure.cut(&messages[last].content, user_len - excess, true)?;
            add(&mut cut, Role::User);
        } else if system == 1 && measure.text_len(&messages[0].content)? > budget / 2 {
            messages[0].content = measure.cut(&messages[0].content, budget / 2, false)?;
            add(&mut cut, Role::System);
        } else {
            messages[last].content.clear();
            add(&mut cut, Role::User);
        }
    }
    Err(bad_input!(
        "the conversation cannot be fitted into {budget} prompt tokens\nhint: lower max_new_tokens (/set max_new_tokens=…) to leave more of the context window to the prompt"
    ))
}

fn add(cut: &mut Vec<Role>, role: Role) {
    if !cut.contains(&role) {
        cut.push(role);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One token per word, and two per message for the template's markers.
    struct Words;

    impl Measure for Words {
        fn prompt_len(&mut self, messages: &[Message]) -> Result<usize> {
            Ok(messages.iter().map(|m| 2 + m.content.split_whitespace().count()).sum())
        }
        fn text_len(&mut self, text: &str) -> Result<usize> {
            Ok(text.split_whitespace().count())
        }
        fn cut(&mut self, text: &str, keep: usize, keep_end: bool) -> Result<String> {
            let words: Vec<&str> = text.split_whitespace().collect();
            let kept = match keep_end {
                true => &words[words.len().saturating_sub(keep)..],
                false => &words[..keep.min(words.len())],
            };
            Ok(kept.join(" "))
        }
    }

    fn history() -> Vec<Message> {
        vec![
            Message::new(Role::System, "be brief"),    // 4
            Message::new(Role::User, "one two three"), // 5
            Message::new(Role::Assistant, "a b c d"),  // 6
            Message::new(Role::User, "four five"),     // 4
            Message::new(Role::Assistant, "e f"),      // 4
            Message::new(Role::User, "six"),           // 3
        ]
    }

    #[test]
    fn a_conversation_that_fits_is_read_whole() {
        let fit = fit(&history(), 26, &mut Words).unwrap();
        assert_eq!((fit.messages.len(), fit.dropped_turns), (6, 0));
    }

    #[test]
    fn oldest_whole_turns_go_first_and_the_system_message_stays() {
        let fit = fit(&history(), 25, &mut Words).unwrap();
        assert_eq!(fit.dropped_turns, 1);
        assert_eq!(fit.messages[0].role, Role::System);
        assert_eq!(fit.messages[1].content, "four five");
        assert_eq!(fit.messages.len(), 4);
        let fit = super::fit(&history(), 7, &mut Words).unwrap();
        assert_eq!(fit.dropped_turns, 2);
        assert_eq!(fit.messages, [history()[0].clone(), history()[5].clone()]);
        assert!(fit.cut.is_empty());
    }

    #[test]
    fn a_message_longer_than_the_window_is_cut_keeping_its_end() {
        let mut long = history();
        long.push(Message::new(Role::User, "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"));
        long.remove(5);
        let fit = fit(&long, 10, &mut Words).unwrap();
        assert_eq!(fit.dropped_turns, 2);
        assert_eq!(fit.cut, [Role::User]);
        assert_eq!(fit.messages[1].content, "w7 w8 w9 w10");
    }

    #[test]
    fn an_overlong_system_message_is_cut_keeping_its_start() {
        let messages = vec![
            Message::new(Role::System, "s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12"),
            Message::new(Role::User, "q"),
        ];
        let fit = fit(&messages, 10, &mut Words).unwrap();
        assert_eq!(fit.cut, [Role::System]);
        assert!(fit.messages[0].content.starts_with("s1 s2"));
        assert_eq!(fit.messages[1].content, "q");
    }
}
