//! imprint-devsim tests: device logic (no I/O), the host session against
//! the simulator (in memory and over a pty), and the pty itself (pacing,
//! unplug, replug).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod device;
mod pty;
mod session;
