//! SIGINT (Ctrl-C) and SIGTERM (what Slurm and Kubernetes send before killing) during
//! training: the first asks the loop to stop at the end of the current step and save a
//! resumable checkpoint, then exit 130 or 143 (128 + the signal, as shells report it); a second
//! exits at once, which is still safe because saves are atomic.

use std::sync::atomic::{AtomicI32, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::Interrupted;

/// The first signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

/// Installs the handler: a thread that receives the signals (once per process).
pub fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else { return };
        std::thread::spawn(move || {
            for signal in signals.forever() {
                if RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst).is_err()
                {
                    crate::error::exit_now(128 + signal);
                }
                let name = if signal == SIGTERM { "SIGTERM" } else { "Ctrl-C" };
                eprintln!(
                    "\n{name}: saving a resumable checkpoint after this step (again to quit now)"
                );
            }
        });
    });
}

/// A check to run between batches of work done before the first step: it fails with
/// `message` once a signal has arrived.
pub fn check_with(message: String) -> impl Fn() -> anyhow::Result<()> {
    move || match requested() {
        Some(signal) => Err(Interrupted { signal, message: message.clone() }.into()),
        None => Ok(()),
    }
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}
