//! The REPL's slash commands and `/set` settings. A bad command or value is a one-line error
//! (`Err(String)`), and the session goes on.

use std::path::PathBuf;

use crate::generate::{Choice, SamplingConfig};

pub const HELP: &str = "\
/help                 this list
/system TEXT          set the system message (no TEXT: remove it)
/set KEY=VALUE …      temperature (0: greedy; a temperature, top_p or top_k
                      means sampling), top_p, top_k, max_new_tokens,
                      repetition_penalty, seed, show_scores, ignore_eos (runs to
                      max_new_tokens: benchmarks); no argument: show them
/retry                a new answer to the last message
/undo                 remove the last exchange
/reset                start over (the system message stays)
/save FILE            write the conversation as one {\"messages\": […]} JSONL row
/load FILE            continue a saved conversation
/stats                context, cache and speed of the last answer
/best N               sample N answers, keep the one the reward model scores highest
/compare K            sample K answers, rank them, append the ranking to --prefs
/good, /bad           mark the last answer good or bad: a KTO row appended to
                      the file beside --prefs (prefs.jsonl → prefs.kto.jsonl)
/exit                 leave (Ctrl-D too)
Alt-Enter or a trailing \\ starts a new line; Ctrl-C stops an answer.";

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help,
    System(String),
    Set(Vec<(String, String)>),
    Retry,
    Undo,
    Reset,
    Save(PathBuf),
    Load(PathBuf),
    Stats,
    Best(usize),
    Compare(usize),
    /// `/good` (true) or `/bad` (false): the last answer judged.
    Mark(bool),
    Exit,
}

/// Parses a line that starts with `/`.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (name, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let none = |command: Command| match rest {
        "" => Ok(command),
        _ => Err(format!("{name} takes no argument")),
    };
    let path = |command: fn(PathBuf) -> Command| match rest {
        "" => Err(format!("usage: {name} FILE")),
        file => Ok(command(PathBuf::from(file))),
    };
    let count = |command: fn(usize) -> Command| match rest.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(command(n)),
        _ => Err(format!("usage: {name} N (a number, at least 2)")),
    };
    match name {
        "/help" | "/?" => none(Command::Help),
        "/system" => Ok(Command::System(rest.to_string())),
        "/set" => rest
            .split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
                _ => Err(format!("/set: expected KEY=VALUE, got `{pair}`")),
            })
            .collect::<Result<_, _>>()
            .map(Command::Set),
        "/retry" => none(Command::Retry),
        "/undo" => none(Command::Undo),
        "/reset" => none(Command::Reset),
        "/save" => path(Command::Save),
        "/load" => path(Command::Load),
        "/stats" => none(Command::Stats),
        "/best" => count(Command::Best),
        "/compare" => count(Command::Compare),
        "/good" => none(Command::Mark(true)),
        "/bad" => none(Command::Mark(false)),
        "/exit" | "/quit" => none(Command::Exit),
        other => Err(format!("unknown command {other} (/help lists them)")),
    }
}

/// What `/set` changes: the sampler and whether moderation scores are shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub sampling: SamplingConfig,
    pub show_scores: bool,
}

impl Settings {
    /// Applies every pair or none of them.
    pub fn apply(&mut self, pairs: &[(String, String)]) -> Result<(), String> {
        let mut next = self.clone();
        // A temperature of 0 means greedy even beside a top_p or top_k, as on the command line.
        let (temperature, rest): (Vec<_>, Vec<_>) =
            pairs.iter().partition(|(key, _)| key == "temperature");
        for (key, value) in rest.into_iter().chain(temperature) {
            next.set(key, value)?;
        }
        next.sampling.validate()?;
        *self = next;
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
            value.parse().map_err(|_| format!("{key}: `{value}` is not a valid number"))
        }
        let s = &mut self.sampling;
        match key {
            // The rule of the command line's flags: a temperature above 0, a top-p or a top-k
            // means sampling, a temperature of 0 greedy decoding.
            "temperature" => s.apply_choice(Choice::Temperature(number(key, value)?))?,
            "top_p" => s.apply_choice(Choice::TopP(number(key, value)?))?,
            "top_k" => s.apply_choice(Choice::TopK(number(key, value)?))?,
            "max_new_tokens" => match number(key, value)? {
                0 => return Err("max_new_tokens must be at least 1".into()),
                n => s.max_new_tokens = n,
            },
            "repetition_penalty" => s.repetition_penalty = number(key, value)?,
            "seed" => s.seed = number(key, value)?,
            "show_scores" => self.show_scores = boolean(key, value)?,
            "ignore_eos" => s.ignore_eos = boolean(key, value)?,
            other => {
                return Err(format!(
                    "unknown setting `{other}` (temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed, show_scores, ignore_eos)"
                ));
            }
        }
        Ok(())
    }

    /// `temperature=0.7 top_p=0.9 …`, as `/set` takes them (ignore_eos only when on): what
    /// an answer really uses. Greedy shows `temperature=0` and the temperature `/retry`,
    /// `/best` and `/compare` sample at, since greedy would repeat the same answer.
    pub fn describe(&self) -> String {
        let s = &self.sampling;
        let temperature = match s.do_sample {
            true => format!("temperature={}", s.temperature),
            false => format!(
                "temperature=0 (greedy; /retry, /best and /compare sample at temperature={})",
                s.temperature
            ),
        };
        format!(
            "{temperature} top_p={} top_k={} max_new_tokens={} repetition_penalty={} seed={} show_scores={}",
            s.top_p, s.top_k, s.max_new_tokens, s.repetition_penalty, s.seed, self.show_scores
        ) + if s.ignore_eos { " ignore_eos=true" } else { "" }
    }

    /// The sampler of an answer drawn by `/retry`, `/best` or `/compare`: these settings, and
    /// sampling at the temperature [`Self::describe`] names when they are greedy.
    pub fn drawn(&self, draw: u64) -> SamplingConfig {
        let mut sampling = self.sampling.clone();
        sampling.do_sample = true;
        sampling.seed = sampling.seed.wrapping_add(draw);
        sampling
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err(format!("{key}: expected true or false, got `{value}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_their_errors() {
        assert_eq!(parse("/retry").unwrap(), Command::Retry);
        assert_eq!(parse(" /system  Be brief. ").unwrap(), Command::System("Be brief.".into()));
        assert_eq!(parse("/compare 3").unwrap(), Command::Compare(3));
        assert_eq!(parse("/good").unwrap(), Command::Mark(true));
        assert_eq!(parse(" /bad ").unwrap(), Command::Mark(false));
        assert!(parse("/good answer").unwrap_err().contains("takes no argument"));
        assert_eq!(parse("/save a b.jsonl").unwrap(), Command::Save("a b.jsonl".into()));
        assert!(parse("/compare x").unwrap_err().contains("usage"));
        assert!(parse("/best 1").is_err());
        assert!(parse("/undo now").unwrap_err().contains("takes no argument"));
        assert!(parse("/bogus").unwrap_err().contains("unknown command /bogus"));
        assert!(parse("/set temperature").unwrap_err().contains("KEY=VALUE"));
    }

    #[test]
    fn set_applies_all_or_nothing() {
        let mut settings = Settings { sampling: SamplingConfig::default(), show_scores: false };
        let pairs = |text: &str| match parse(&format!("/set {text}")).unwrap() {
            Command::Set(pairs) => pairs,
            other => panic!("{other:?}"),
        };
        settings.apply(&pairs("temperature=0.7 top_k=5 seed=3 show_scores=true")).unwrap();
        let s = &settings.sampling;
        assert!(s.do_sample && s.temperature == 0.7 && s.top_k == 5 && s.seed == 3);
        assert!(settings.show_scores);
        let before = settings.clone();
        assert!(settings.apply(&pairs("seed=9 top_p=2")).unwrap_err().contains("top_p"));
        assert!(settings.apply(&pairs("seed=x")).unwrap_err().contains("not a valid number"));
        assert!(settings.apply(&pairs("colour=red")).unwrap_err().contains("unknown setting"));
        assert_eq!(settings, before);
        settings.apply(&pairs("temperature=0")).unwrap();
        assert!(!settings.sampling.do_sample);
        assert!(settings.describe().starts_with("temperature=0 "));
    }

    /// Issue 48: `/set` showed `temperature=0` while `/retry` sampled at a temperature it did
    /// not show, and a top_p or top_k did not switch sampling on as the flags now do.
    #[test]
    fn set_follows_the_flags_rule_and_shows_what_retry_samples_at() {
        let greedy = SamplingConfig { temperature: 0.9, ..SamplingConfig::default() };
        let mut settings = Settings { sampling: greedy, show_scores: false };
        let shown = settings.describe();
        assert!(
            shown.starts_with(
                "temperature=0 (greedy; /retry, /best and /compare sample at temperature=0.9)"
            ),
            "{shown}"
        );
        let drawn = settings.drawn(1);
        assert!(drawn.do_sample && drawn.temperature == 0.9 && drawn.seed == 1);

        let pairs = |text: &str| match parse(&format!("/set {text}")).unwrap() {
            Command::Set(pairs) => pairs,
            other => panic!("{other:?}"),
        };
        settings.apply(&pairs("top_k=40")).unwrap();
        assert!(settings.sampling.do_sample, "a top_k means sampling");
        assert!(settings.describe().starts_with("temperature=0.9 top_p=1 top_k=40"));
        settings.apply(&pairs("temperature=0 top_p=0.5")).unwrap();
        assert!(!settings.sampling.do_sample, "temperature 0 means greedy, whatever the order");
        settings.apply(&pairs("top_p=0.5 temperature=0")).unwrap();
        assert!(!settings.sampling.do_sample);
        assert!(settings.apply(&pairs("temperature=-1")).unwrap_err().contains("≥ 0"));
    }
}
