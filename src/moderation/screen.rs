//! Screening an answer while it streams: text is held back until it has been scored, and it
//! is scored at sentence ends (or once the held text passes a short window), so what reaches
//! the screen was part of an answer the classifier passed. A flagged answer stops there, and
//! nothing of the flagged sentence is shown.

use anyhow::Result;

use crate::moderation::Moderation;

/// Characters held at most before the text is scored without waiting for a sentence end.
pub const WINDOW: usize = 80;

pub struct Screen {
    text: String,
    /// Bytes of `text` already passed and shown.
    shown: usize,
}

/// What the screen lets through.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Text that passed (possibly empty: still held).
    Show(String),
    Flagged(Moderation),
}

impl Screen {
    pub fn new() -> Self {
        Self { text: String::new(), shown: 0 }
    }

    /// Adds streamed text; scores the answer so far when the held text ends a sentence or
    /// outgrows the window.
    pub fn push(
        &mut self,
        piece: &str,
        score: &mut dyn FnMut(&str) -> Result<Moderation>,
    ) -> Result<Verdict> {
        self.text.push_str(piece);
        let held = &self.text[self.shown..];
        let cut = match held.rfind(['.', '!', '?', '\n']) {
            Some(at) => self.shown + at + 1,
            None if held.chars().count() > WINDOW => self.text.len(),
            None => return Ok(Verdict::Show(String::new())),
        };
        self.pass(cut, score)
    }

    /// Adds the answer's last text, then scores and releases whatever is still held (the
    /// whole answer is scored once more, so an answer always gets a final verdict).
    pub fn finish(
        &mut self,
        tail: &str,
        score: &mut dyn FnMut(&str) -> Result<Moderation>,
    ) -> Result<Verdict> {
        self.text.push_str(tail);
        self.pass(self.text.len(), score)
    }

    fn pass(
        &mut self,
        cut: usize,
        score: &mut dyn FnMut(&str) -> Result<Moderation>,
    ) -> Result<Verdict> {
        let verdict = score(&self.text[..cut])?;
        if verdict.flagged {
            return Ok(Verdict::Flagged(verdict));
        }
        let piece = self.text[self.shown..cut].to_string();
        self.shown = cut;
        Ok(Verdict::Show(piece))
    }
}

impl Default for Screen {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::moderation::NUM_CATEGORIES;

    /// Flags any text containing "bad" as harassment.
    fn score(scored: &mut Vec<String>) -> impl FnMut(&str) -> Result<Moderation> + '_ {
        move |text| {
            scored.push(text.to_string());
            let mut scores = [0.0; NUM_CATEGORIES];
            scores[3] = if text.contains("bad") { 0.9 } else { 0.1 };
            Ok(Moderation::new(scores, &[0.5; NUM_CATEGORIES]))
        }
    }

    #[test]
    fn text_is_shown_only_after_its_sentence_passed() {
        let mut scored = Vec::new();
        let mut screen = Screen::new();
        let mut score = score(&mut scored);
        assert_eq!(screen.push("Hello", &mut score).unwrap(), Verdict::Show("".into()));
        assert_eq!(
            screen.push(" there. And", &mut score).unwrap(),
            Verdict::Show("Hello there.".into())
        );
        assert_eq!(screen.push(" more", &mut score).unwrap(), Verdict::Show("".into()));
        assert_eq!(screen.finish("!", &mut score).unwrap(), Verdict::Show(" And more!".into()));
        drop(score);
        assert_eq!(scored, ["Hello there.", "Hello there. And more!"]);
    }

    #[test]
    fn a_flagged_sentence_never_shows() {
        let mut scored = Vec::new();
        let mut screen = Screen::new();
        let mut score = score(&mut scored);
        assert_eq!(
            screen.push("Fine. You are ba", &mut score).unwrap(),
            Verdict::Show("Fine.".into())
        );
        assert_eq!(screen.push("d", &mut score).unwrap(), Verdict::Show("".into()));
        match screen.push(" and dumb.", &mut score).unwrap() {
            Verdict::Flagged(m) => assert!(m.categories[3]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn long_text_without_a_sentence_end_is_scored_at_the_window() {
        let mut scored = Vec::new();
        let mut screen = Screen::new();
        let long = "word ".repeat(20);
        let shown = screen.push(&long, &mut score(&mut scored)).unwrap();
        assert_eq!(shown, Verdict::Show(long.clone()));
    }
}
