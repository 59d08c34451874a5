//! `rlhf chat`: a conversation with a policy in a terminal or a script.
//!
//! [`session::Session`] holds the conversation and its KV cache and runs a turn; [`repl`] and
//! [`piped`] are its two front ends. Around a turn: [`context`] fits the conversation to the
//! window, [`crate::generate::TextStream`] turns tokens into text, [`crate::moderation::screen`]
//! holds it back until moderation passed it, [`log`], [`prefs`] and [`feedback`] keep what the
//! chat yields as training data, [`saved`] is `/save` and `/load`, [`command`] the slash
//! commands, [`interrupt`] Ctrl-C, [`wrap`] whole words at the terminal's edge.

pub mod command;
pub mod context;
pub mod feedback;
pub mod interrupt;
pub mod log;
pub mod piped;
pub mod prefs;
pub mod repl;
pub mod saved;
pub mod session;
pub mod wrap;

pub use session::{Answer, Services, Session};
