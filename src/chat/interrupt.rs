//! Ctrl-C in a chat stops the answer being written, never the program. At the REPL's prompt
//! the line editor reads Ctrl-C as a key (it clears the line), so the signal only arrives while
//! an answer streams. Outside an answer (piped input, loading) it ends the program as usual.
//!
//! Training has its own handler (`train::interrupt`, save then stop); a process installs one
//! of the two.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{EXIT_INTERRUPTED, exit_now};

static ANSWERING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if ANSWERING.load(Ordering::SeqCst) {
            STOP.store(true, Ordering::SeqCst);
        } else {
            exit_now(EXIT_INTERRUPTED);
        }
    });
}

/// Marks an answer as streaming until the guard drops; Ctrl-C meanwhile sets [`stop_requested`].
pub fn answering() -> Answering {
    STOP.store(false, Ordering::SeqCst);
    ANSWERING.store(true, Ordering::SeqCst);
    Answering
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub struct Answering;

impl Drop for Answering {
    fn drop(&mut self) {
        ANSWERING.store(false, Ordering::SeqCst);
        STOP.store(false, Ordering::SeqCst);
    }
}
