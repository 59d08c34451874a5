//! Tokens to text as they are chosen. A byte-level tokenizer may split a character across
//! tokens, so text is released only once it decodes to whole characters; text that could be
//! the start of a stop string (`\n\nHuman:` for the HH template) is held until it is not.

use tokenizers::Tokenizer;

pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    tokens: Vec<u32>,
    /// Bytes of the decoded text released so far.
    released: usize,
    stops: Vec<String>,
    /// A stop string appeared.
    stopped: bool,
}

impl<'a> TextStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, stops: &[String]) -> Self {
        Self { tokenizer, tokens: Vec::new(), released: 0, stops: stops.to_vec(), stopped: false }
    }

    /// Text that `token` completes (often empty).
    pub fn push(&mut self, token: u32) -> String {
        self.tokens.push(token);
        let text = self.text();
        self.stopped = self.stops.iter().any(|s| text.contains(s.as_str()));
        if text.ends_with(char::REPLACEMENT_CHARACTER) {
            return String::new(); // a character still missing its last bytes
        }
        let end = releasable(&text, &self.stops);
        self.release(&text, end)
    }

    /// Whether a stop string has appeared: the answer ends there.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The rest of the text at the end of the answer (a stop string and what follows it cut).
    pub fn finish(&mut self) -> String {
        let text = self.text();
        let end = self.before_stop(&text);
        self.release(&text, end)
    }

    /// The whole answer so far, stop strings cut.
    pub fn answer(&self) -> String {
        let text = self.text();
        text[..self.before_stop(&text)].to_string()
    }

    /// Where the first stop string starts (the end when there is none).
    fn before_stop(&self, text: &str) -> usize {
        self.stops.iter().filter_map(|s| text.find(s.as_str())).min().unwrap_or(text.len())
    }

    fn text(&self) -> String {
        self.tokenizer.decode(&self.tokens, true).unwrap_or_default()
    }

    fn release(&mut self, text: &str, end: usize) -> String {
        if end <= self.released || !text.is_char_boundary(self.released) {
            return String::new();
        }
        let piece = text[self.released..end].to_string();
        self.released = end;
        piece
    }
}

/// How much of `text` can be shown: up to a stop string, and short of a tail that may still
/// become one.
fn releasable(text: &str, stops: &[String]) -> usize {
    let mut end = text.len();
    for stop in stops {
        if let Some(at) = text.find(stop.as_str()) {
            end = end.min(at);
            continue;
        }
        for (at, _) in text.char_indices().rev().take(stop.len()) {
            if stop.starts_with(&text[at..]) {
                end = end.min(at);
            }
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_possible_stop_string_is_held_until_it_is_not_one() {
        let stops = ["\n\nHuman:".to_string()];
        assert_eq!(releasable("Hi there", &stops), 8);
        assert_eq!(releasable("Hi\n\nHu", &stops), 2);
        assert_eq!(releasable("Hi\n\nHuman: more", &stops), 2);
        assert_eq!(releasable("Hi\n\nHello", &stops), 9);
        assert_eq!(releasable("é\n", &stops), "é".len());
    }
}
