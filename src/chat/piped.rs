//! Chat for scripts: `--prompt TEXT`, or each line of a piped stdin, is a user turn of one
//! conversation. Only answers reach stdout — streamed as text, or with `--json` one object per
//! turn — and notices go to stderr.

use std::io::{BufRead, Write};

use anyhow::{Context, Result};

use super::session::{FinishReason, Output, Session};
use crate::bad_input;

pub fn run(session: &mut Session, prompt: Option<&str>, json: bool) -> Result<()> {
    let mut out = Piped { json };
    let mut turn = |text: &str, out: &mut Piped| -> Result<()> {
        let answer = session.send(text, out)?;
        if answer.finish == FinishReason::Length {
            out.notice(&format!(
                "[cut at max_new_tokens={}: --max-new-tokens N for longer answers]",
                session.settings.sampling.max_new_tokens
            ));
        }
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
    let mut stdin = std::io::stdin().lock();
    let mut bytes = Vec::new();
    for number in 1.. {
        bytes.clear();
        if stdin.read_until(b'\n', &mut bytes).context("reading stdin")? == 0 {
            break;
        }
        let line = std::str::from_utf8(&bytes).map_err(|e| {
            bad_input!(
                "stdin:{number}: not valid UTF-8 (at byte {})\nhint: convert the input to UTF-8 first, e.g. with iconv -t UTF-8",
                e.valid_up_to() + 1
            )
        })?;
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.trim().is_empty() {
            turn(line, &mut out)?;
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
