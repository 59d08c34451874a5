//! Exit codes and the error kinds that choose them.
//!
//! Everything is an `anyhow::Error`; an error caused by what the user handed us (a config, a
//! data file, an argument, a checkpoint) carries a [`BadInput`] marker somewhere in its chain,
//! which turns exit code 1 into 2. A signal after a safe save is [`Interrupted`] (128 + the
//! signal: 130 for Ctrl-C, 143 for SIGTERM).

use std::fmt;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;
pub const EXIT_INTERRUPTED: i32 = 130;

/// Ends the process at once with `code`, from any thread. Not `std::process::exit`: that runs
/// LibTorch's C++ static destructors, and when the main thread is still inside a step or a
/// save they free state it then uses (heap corruption, or a checkpoint saved from freed
/// tensors). Saves are atomic, so quitting mid-save leaves the last complete one.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` only ends the process.
    unsafe { libc::_exit(code) }
}

/// Marks an error as the user's input being wrong (exit code 2).
#[derive(Debug)]
pub struct BadInput(pub String);

impl fmt::Display for BadInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// The run was stopped by `signal` and left a resumable checkpoint (exit code 128 + signal);
/// the message says where and how to continue.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Interrupted {
    pub signal: i32,
    pub message: String,
}

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
    if let Some(stop) = err.chain().find_map(|e| e.downcast_ref::<Interrupted>()) {
        128 + stop.signal
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
        let stopped = |signal| Interrupted { signal, message: "saved".into() };
        assert_eq!(exit_code(&anyhow::Error::new(stopped(2))), EXIT_INTERRUPTED);
        assert_eq!(exit_code(&anyhow::Error::new(stopped(15))), 143);
    }
}
