//! The terminal front end: line editing and persistent history (rustyline), a bracketed paste
//! kept as one message, Alt-Enter or a trailing `\` for a new line, answers streamed, a short
//! status after each, and the slash commands.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Cmd, Config, Editor, EventHandler, KeyCode, KeyEvent, Modifiers};

use super::command::{self, Command, HELP};
use super::prefs::parse_ranking;
use super::saved;
use super::session::{Answer, FinishReason, Output, Session};
use super::wrap::{WordWrap, terminal_width};

const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// Runs the REPL until `/exit` or Ctrl-D.
pub fn run(session: &mut Session) -> Result<()> {
    let mut editor = editor()?;
    let history = history_file();
    if let Some(path) = &history {
        let _ = editor.load_history(path); // none yet on a first run
    }
    println!("{DIM}rlhf chat: /help lists the commands, Ctrl-D or /exit leaves{RESET}");
    let mut out = Terminal::new();
    loop {
        let line = match editor.readline("you› ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue, // Ctrl-C at the prompt clears the line
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(anyhow!("reading the terminal: {e}")),
        };
        let message = join_continued_lines(&line);
        if message.trim().is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line.as_str());
        if let Some(path) = &history {
            let _ = editor.append_history(path);
        }
        let result = match message.trim_start().starts_with('/') {
            true => match command::parse(&message) {
                Ok(Command::Exit) => break,
                Ok(command) => run_command(session, &mut editor, command, &mut out),
                Err(e) => Err(anyhow!(e)),
            },
            false => answer(session, &mut out, |s, out| s.send(&message, out)),
        };
        if let Err(e) = result {
            eprintln!("error: {e:#}");
        }
    }
    Ok(())
}

fn run_command(
    session: &mut Session,
    editor: &mut Editor<Helper, DefaultHistory>,
    command: Command,
    out: &mut Terminal,
) -> Result<()> {
    match command {
        Command::Help => println!("{HELP}"),
        Command::System(text) => {
            let removed = text.is_empty();
            session.set_system(Some(text));
            out.notice(if removed { "system message removed" } else { "system message set" });
        }
        Command::Set(pairs) if pairs.is_empty() => println!("{}", session.settings.describe()),
        Command::Set(pairs) => {
            session.settings.apply(&pairs).map_err(|e| anyhow!(e))?;
            out.notice(&session.settings.describe());
        }
        Command::Retry => answer(session, out, |s, out| s.retry(out))?,
        Command::Undo => match session.undo() {
            0 => out.notice("nothing to undo"),
            n => out.notice(&format!("removed the last exchange ({n} messages)")),
        },
        Command::Reset => {
            session.reset();
            out.notice("conversation cleared");
        }
        Command::Save(path) => {
            saved::save(&path, &session.history())?;
            out.notice(&format!(
                "saved {} messages to {}",
                session.history().len(),
                path.display()
            ));
        }
        Command::Load(path) => {
            session.load(saved::load(&path)?);
            out.notice(&format!(
                "loaded {} messages from {}",
                session.history().len(),
                path.display()
            ));
        }
        Command::Stats => println!("{}", session.stats()),
        Command::Best(n) => {
            let answers = session.best_of(n, out)?;
            let scores: Vec<String> =
                answers.iter().map(|a| format!("{:.3}", a.reward.unwrap_or(f32::NAN))).collect();
            println!("{}", out.wrapped(&answers[0].content, 0));
            out.notice(&format!(
                "best of {n} by reward (scores, best first: {})",
                scores.join(" ")
            ));
        }
        Command::Compare(k) => compare(session, editor, k, out)?,
        Command::Mark(good) => match session.mark(good)? {
            Some((path, rows)) => out.notice(&format!(
                "thumbs {} saved to {} ({rows} row{}; `rlhf kto train` reads it)",
                if good { "up" } else { "down" },
                path.display(),
                if rows == 1 { "" } else { "s" }
            )),
            None => out.notice("no answer to mark yet: /good and /bad judge the last answer"),
        },
        Command::Exit => {}
    }
    Ok(())
}

/// `/compare K`: shows the answers numbered and reads the user's ranking.
fn compare(
    session: &mut Session,
    editor: &mut Editor<Helper, DefaultHistory>,
    k: usize,
    out: &mut Terminal,
) -> Result<()> {
    let answers = session.compare(k, out)?;
    if answers.len() < 2 {
        out.notice(&format!(
            "warning: the {k} answers are all the same, so there is nothing to rank and nothing was written\nhint: sample more freely (/set temperature=1.2 or higher), then /compare again"
        ));
        return Ok(());
    }
    if answers.len() < k {
        out.notice(&format!(
            "{} of the {k} answers repeat another and are left out: {} to rank",
            k - answers.len(),
            answers.len()
        ));
    }
    for (i, answer) in answers.iter().enumerate() {
        let label = format!("[{}] ", i + 1);
        let text = out.wrapped(&answer.content, label.chars().count());
        println!("{BOLD}{label}{RESET}{text}");
    }
    loop {
        let line = match editor.readline("rank best first (e.g. 2 1 3, /skip)› ") {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => "/skip".into(),
            Err(e) => return Err(anyhow!("reading the terminal: {e}")),
        };
        if line.trim() == "/skip" {
            out.notice("comparison discarded");
            return Ok(());
        }
        match parse_ranking(&line, answers.len()) {
            Ok(ranking) => {
                session.rank(&answers, &ranking)?;
                out.notice(&format!(
                    "ranking saved; answer {} continues the conversation",
                    ranking[0] + 1
                ));
                return Ok(());
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

/// Streams one answer and prints its status line.
fn answer(
    session: &mut Session,
    out: &mut Terminal,
    ask: impl FnOnce(&mut Session, &mut dyn Output) -> Result<Answer>,
) -> Result<()> {
    let answer = ask(session, out);
    out.end_answer();
    let answer = answer?;
    println!();
    match answer.finish {
        FinishReason::Interrupted => {
            out.notice("[interrupted: the partial answer stays in the conversation]")
        }
        FinishReason::Length => out.notice(&format!(
            "[cut at max_new_tokens={}: /set max_new_tokens=N for longer answers]",
            session.settings.sampling.max_new_tokens
        )),
        // A declined message was never answered: no tokens, no speed to report.
        FinishReason::ContentFilter if answer.usage.completion_tokens == 0 => return Ok(()),
        _ => {}
    }
    out.notice(&status(&answer));
    Ok(())
}

/// "42 tokens · 31.5 tokens/s · reward 0.53"
fn status(answer: &Answer) -> String {
    let mut parts = vec![format!("{} tokens", answer.usage.completion_tokens)];
    if answer.usage.completion_tokens > 1 {
        parts.push(format!("{:.1} tokens/s", answer.tokens_per_second()));
    }
    if let Some(reward) = answer.reward {
        parts.push(format!("reward {reward:.3}"));
    }
    parts.join(" · ")
}

/// The terminal: answers on stdout as they stream, wrapped at whole words, notices dimmed.
struct Terminal {
    /// The answer streaming now, when the terminal's width is known.
    wrap: Option<WordWrap>,
}

impl Terminal {
    fn new() -> Self {
        Self { wrap: terminal_width().map(WordWrap::new) }
    }

    /// Shows the word the wrapping held back; the next text starts a new answer.
    fn end_answer(&mut self) {
        if let Some(wrap) = &mut self.wrap {
            write_out(&wrap.finish());
        }
        self.wrap = terminal_width().map(WordWrap::new); // the terminal may have been resized
    }

    /// Whole `text` wrapped to the terminal, its first line starting `indent` columns in.
    fn wrapped(&self, text: &str, indent: usize) -> String {
        match terminal_width() {
            Some(width) => {
                let wrapped = WordWrap::text(width, &format!("{}{text}", " ".repeat(indent)));
                wrapped.chars().skip(indent).collect()
            }
            None => text.to_string(),
        }
    }
}

impl Output for Terminal {
    fn text(&mut self, piece: &str) {
        match &mut self.wrap {
            Some(wrap) => write_out(&wrap.push(piece)),
            None => write_out(piece),
        }
    }

    fn notice(&mut self, text: &str) {
        if let Some(wrap) = &mut self.wrap {
            write_out(&wrap.finish());
        }
        println!("{DIM}{text}{RESET}");
    }
}

fn write_out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// `a\` + newline continues a message on the next line; the backslash is not part of it.
fn join_continued_lines(input: &str) -> String {
    input.replace("\\\n", "\n")
}

fn editor() -> Result<Editor<Helper, DefaultHistory>> {
    let config = Config::builder()
        .auto_add_history(false)
        .bracketed_paste(true)
        .max_history_size(10_000)
        .map_err(|e| anyhow!("{e}"))?
        .build();
    let mut editor =
        Editor::with_config(config).map_err(|e| anyhow!("starting the line editor: {e}"))?;
    editor.set_helper(Some(Helper));
    editor.bind_sequence(
        KeyEvent(KeyCode::Enter, Modifiers::ALT),
        EventHandler::Simple(Cmd::Newline),
    );
    Ok(editor)
}

/// `$RLHF_HISTORY`, else `~/.rlhf_chat_history`.
fn history_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("RLHF_HISTORY") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".rlhf_chat_history"))
}

/// Enter on a line that ends with `\` starts a new line instead of sending.
struct Helper;

impl Validator for Helper {
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(match ctx.input().ends_with('\\') {
            true => ValidationResult::Incomplete,
            false => ValidationResult::Valid(None),
        })
    }
}

impl rustyline::completion::Completer for Helper {
    type Candidate = String;
}
impl rustyline::hint::Hinter for Helper {
    type Hint = String;
}
impl rustyline::highlight::Highlighter for Helper {}
impl rustyline::Helper for Helper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trailing_backslash_continues_the_message() {
        assert_eq!(join_continued_lines("first\\\nsecond"), "first\nsecond");
        assert_eq!(join_continued_lines("C:\\dir"), "C:\\dir");
    }
}
