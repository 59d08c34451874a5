//! Exit codes and the error kinds that choose them.
//!
//! Everything is an `anyhow::Error`; an error caused by what the user handed us (a config, a
//! data file, an argument, a checkpoint) carries a [`BadInput`] marker somewhere in its chain,
//! which turns exit code 1 into 2. Ctrl-C after a safe save is [`Interrupted`] (130).

use std::fmt;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// Marks an error as the user's input being wrong (exit code 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// The run was interrupted and left a resumable checkpoint (exit code 130); the message says
/// where and how to continue.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

/// Builds a bad-input error: `bad_input!("{path}: missing field {name}")`.
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => {
        ::anyhow::Error::new($crate::error::BadInput(format!($($arg)*)))
    };
}

/// `result.bad_input()?` tags any error as the user's fault while keeping its message.
pub trait ResultExt<T> {
    fn bad_input(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn bad_input(self) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e: anyhow::Error = e.into();
            anyhow::Error::new(BadInput(format!("{e:#}")))
        })
    }
}

/// The exit code an error maps to.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<Interrupted>()) {
        EXIT_INTERRUPTED
    } else if err.chain().any(|e| e.is::<BadInput>()) {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn bad_input_survives_added_context() {
        let err =
            Err::<(), _>(bad_input!("line 3: oops")).context("reading data.jsonl").unwrap_err();
        assert_eq!(exit_code(&err), EXIT_BAD_INPUT);
        assert_eq!(format!("{err:#}"), "reading data.jsonl: line 3: oops");
    }

    #[test]
    fn plain_errors_are_runtime_failures() {
        assert_eq!(exit_code(&anyhow::anyhow!("disk full")), EXIT_FAILURE);
        assert_eq!(exit_code(&anyhow::Error::new(Interrupted("saved".into()))), EXIT_INTERRUPTED);
    }
}
