//! Ctrl-C during training: the first press asks the loop to stop at the end of the current
//! step and save a resumable checkpoint (exit 130); a second press exits at once, which is
//! still safe because saves are atomic.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::EXIT_INTERRUPTED;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process; later calls do nothing).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED);
        }
        eprintln!(
            "\ninterrupt: saving a resumable checkpoint after this step (Ctrl-C again to quit now)"
        );
    });
}

/// Whether Ctrl-C (or SIGTERM) was pressed since the run started.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
