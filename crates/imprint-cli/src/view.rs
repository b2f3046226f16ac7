//! The terminal view of the engine: on a terminal, one line per port updated
//! in place (indicatif); otherwise one plain line per change; with `--json`
//! one JSON object per tile update.

use imprint_api::{Tile, TileState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct View {
    inner: Arc<Mutex<Inner>>,
}

enum Mode {
    Json,
    Lines { last: BTreeMap<String, String> },
    Live { multi: MultiProgress, bars: BTreeMap<String, ProgressBar>, style: ProgressStyle },
}

struct Inner {
    mode: Mode,
}

/// What the tile says, in one line.
fn line(t: &Tile) -> String {
    let serial = t.device_serial.as_deref().unwrap_or("?");
    let what = match t.state {
        TileState::Ready => "waiting".to_string(),
        TileState::Provisioned => "already provisioned and locked".to_string(),
        TileState::Running => format!(
            "{:>3}% {}{}",
            t.percent,
            t.stage.map(|s| s.as_str()).unwrap_or(""),
            if t.interrupted { " (resuming after an unplug)" } else { "" }
        ),
        TileState::Passed => {
            let how = if t.recheck {
                " (re-check: already provisioned, nothing written)"
            } else if t.resumed {
                " (re-sent: issued earlier)"
            } else {
                ""
            };
            format!("PASS  certificate {}{how}", t.cert_serial.as_deref().unwrap_or("?"))
        }
        TileState::Failed => format!(
            "FAIL  [{}] {} -> {}",
            t.code.map(|c| c.as_str()).unwrap_or("?"),
            t.reason.as_deref().unwrap_or(""),
            t.hint.as_deref().unwrap_or("")
        ),
        TileState::Gone => "unplugged".to_string(),
    };
    format!("slot {:>2} {:<14} {what}", t.slot, serial)
}

impl View {
    pub fn new(json: bool) -> View {
        let mode = if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template("{prefix:.bold} {wide_msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
            Mode::Live { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: BTreeMap::new(), style }
        } else {
            Mode::Lines { last: BTreeMap::new() }
        };
        View { inner: Arc::new(Mutex::new(Inner { mode })) }
    }

    pub fn tile(&self, t: &Tile) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &mut g.mode {
            Mode::Json => {
                if let Ok(s) = serde_json::to_string(t) {
                    println!("{s}");
                }
            }
            Mode::Lines { last } => {
                // Progress lines only when the stage changes, not every percent.
                let l = format!("{:<28} {}", t.port, line(t));
                let key = format!("{:?}{:?}{:?}", t.state, t.stage, t.code);
                if last.get(&t.port) != Some(&key) {
                    last.insert(t.port.clone(), key);
                    println!("{l}");
                }
            }
            Mode::Live { multi, bars, style } => {
                let bar = bars.entry(t.port.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.set_prefix(t.port.clone());
                    b
                });
                bar.set_message(line(t));
                if t.finished() {
                    bar.tick();
                }
            }
        }
    }

    /// Leave the final lines on screen.
    pub fn finish(&self) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Mode::Live { bars, .. } = &g.mode {
            for b in bars.values() {
                b.finish();
            }
        }
    }
}
