//! Ctrl-C and SIGTERM for the shells: the first asks the station to stop
//! taking devices and drain; a second one aborts at once (exit 130).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Set once SIGINT or SIGTERM arrived.
#[derive(Clone)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Install the handlers: the first signal sets the flag; with the flag
/// already set, the next one ends the process at once.
pub fn install() -> std::io::Result<StopFlag> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the conditional exit is checked before the flag is set.
        signal_hook::flag::register_conditional_shutdown(sig, 130, flag.clone())?;
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(StopFlag(flag))
}
