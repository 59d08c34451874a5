//! Words wrapped whole at the terminal's edge as an answer streams: a word is held back until
//! its end is seen, then goes on the current line if it fits and on a new line if not (a word
//! longer than a line is left to the terminal to break).

use unicode_width::UnicodeWidthStr;

pub struct WordWrap {
    width: usize,
    /// Columns used on the current line.
    column: usize,
    /// The word being received.
    word: String,
    /// Spaces after the last word shown, shown before the next one if it fits the line.
    spaces: String,
}

impl WordWrap {
    pub fn new(width: usize) -> Self {
        Self { width: width.max(1), column: 0, word: String::new(), spaces: String::new() }
    }

    /// What can be shown once `piece` has arrived: whole words and the breaks between them.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::new();
        for c in piece.chars() {
            match c {
                '\n' => {
                    self.flush_word(&mut out);
                    self.spaces.clear(); // trailing spaces show nothing
                    out.push('\n');
                    self.column = 0;
                }
                ' ' | '\t' => {
                    self.flush_word(&mut out);
                    self.spaces.push(c);
                }
                c => self.word.push(c),
            }
        }
        out
    }

    /// The word held back at the end of an answer; the next answer starts a new line.
    pub fn finish(&mut self) -> String {
        let mut out = String::new();
        self.flush_word(&mut out);
        self.spaces.clear();
        self.column = 0;
        out
    }

    /// Whole `text` (not streamed), wrapped.
    pub fn text(width: usize, text: &str) -> String {
        let mut wrap = Self::new(width);
        wrap.push(text) + &wrap.finish()
    }

    fn flush_word(&mut self, out: &mut String) {
        if self.word.is_empty() {
            return;
        }
        let (word, spaces) = (self.word.width(), self.spaces.replace('\t', "        ").width());
        if self.column > 0 && self.column + spaces + word > self.width {
            out.push('\n');
            self.column = 0;
        } else {
            out.push_str(&self.spaces);
            self.column += spaces;
        }
        out.push_str(&self.word);
        self.column += word;
        if self.column > self.width {
            // The terminal broke the long word; its last line ends somewhere in 1..=width.
            self.column = (self.column - 1) % self.width + 1;
        }
        self.word.clear();
        self.spaces.clear();
    }
}

/// The terminal's width in columns: `$COLUMNS` when set (as `ls` reads it), else what the
/// terminal on stdout says; `None` when neither says (no wrapping then).
pub fn terminal_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse().ok()) {
        return Some(columns).filter(|&c: &usize| c > 0);
    }
    // SAFETY: a zeroed winsize is valid, and TIOCGWINSZ only fills it.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(usize::from(size.ws_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(width: usize, pieces: &[&str]) -> String {
        let mut wrap = WordWrap::new(width);
        let mut out: String = pieces.iter().map(|p| wrap.push(p)).collect();
        out.push_str(&wrap.finish());
        out
    }

    /// Issue 48: answers broke words in two at the terminal's edge.
    #[test]
    fn words_wrap_whole_at_the_edge() {
        // Tokens split words anywhere; the result does not depend on where.
        let pieces = ["Par", "is is", " the cap", "ital of Fr", "ance."];
        assert_eq!(streamed(12, &pieces), "Paris is the\ncapital of\nFrance.");
        assert_eq!(streamed(80, &pieces), "Paris is the capital of France.");
        assert_eq!(streamed(12, &["Paris is the capital of France."]), streamed(12, &pieces));
        // Newlines reset the line; a word longer than the line is left whole.
        assert_eq!(streamed(10, &["one two\nthree four five"]), "one two\nthree four\nfive");
        assert_eq!(streamed(4, &["a supercalifragilistic b"]), "a\nsupercalifragilistic\nb");
        // Wide characters take two columns.
        assert_eq!(streamed(5, &["日本 語"]), "日本\n語");
        assert_eq!(WordWrap::text(7, "ab cd ef"), "ab cd\nef");
    }
}
