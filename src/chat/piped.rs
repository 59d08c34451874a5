//! Chat for scripts: `--prompt TEXT`, or each line of a piped stdin, is a user turn of one
//! conversation. Only answers reach stdout — streamed as text, or with `--json` one object per
//! turn — and notices go to stderr.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};

use super::session::{Output, Session};

pub fn run(session: &mut Session, prompt: Option<&str>, json: bool) -> Result<()> {
    let mut out = Piped { json };
    let mut turn = |text: &str, out: &mut Piped| -> Result<()> {
        let answer = session.send(text, out)?;
        let mut stdout = std::io::stdout().lock();
        match json {
            true => writeln!(stdout, "{}", answer.to_json()),
            false => writeln!(stdout),
        }
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
    };
    if let Some(prompt) = prompt {
        return turn(prompt, &mut out);
    }
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        if !line.trim().is_empty() {
            turn(&line, &mut out)?;
        }
    }
    Ok(())
}

struct Piped {
    json: bool,
}

impl Output for Piped {
    fn text(&mut self, piece: &str) {
        if !self.json {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    }

    fn notice(&mut self, text: &str) {
        eprintln!("{text}");
    }
}
