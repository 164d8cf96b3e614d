//! Rendering run events: indicatif bars on a terminal, plain lines when piped, JSON lines
//! with `--json`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stepgraph_engine::{Event, EventSink};

/// JSON lines on stdout, one per event.
pub struct JsonSink;

impl EventSink for JsonSink {
    fn emit(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// Plain lines on stderr (progress at most every 2 s per step).
#[derive(Default)]
pub struct PlainSink {
    last: Mutex<HashMap<String, Instant>>,
}

impl EventSink for PlainSink {
    fn emit(&self, event: &Event) {
        let line = match event {
            Event::StepStarted { step, key } => Some(format!(
                "{step}: running (key {})",
                &key[..12.min(key.len())]
            )),
            Event::StepReused {
                step,
                from_run,
                early_cutoff,
                ..
            } => Some(format!(
                "{step}: reused output of run {from_run}{}",
                if *early_cutoff {
                    " (upstream output unchanged)"
                } else {
                    ""
                }
            )),
            Event::CacheEntryRejected { step, reason, .. } => Some(format!(
                "{step}: cached output rejected ({reason}); running it again"
            )),
            Event::StepFinished {
                step, duration_ms, ..
            } => Some(format!(
                "{step}: done in {}",
                crate::render::duration(*duration_ms)
            )),
            Event::StepFailed { step, error, .. } => Some(format!(
                "{step}: FAILED: {}",
                error.lines().next().unwrap_or("")
            )),
            Event::StepSkipped { step, reason } => Some(format!("{step}: skipped ({reason})")),
            Event::Message { step, text, .. } => Some(format!("{step}: {text}")),
            Event::Progress {
                step,
                done,
                total,
                items,
                failed_items,
                ..
            } => {
                let Ok(mut last) = self.last.lock() else {
                    return;
                };
                let now = Instant::now();
                let due = last
                    .get(step)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(2))
                    || done == total;
                if !due {
                    return;
                }
                last.insert(step.clone(), now);
                Some(format!(
                    "{step}: {done}/{total} mini-batches, {items} items, {failed_items} failed"
                ))
            }
            _ => None,
        };
        if let Some(l) = line {
            eprintln!("{l}");
        }
    }
}

/// Live bars: one per running step.
pub struct BarSink {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, Instant)>>,
}

impl BarSink {
    /// Bars drawn on stderr.
    pub fn new() -> Self {
        BarSink {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn println(&self, s: String) {
        let _ = self.multi.println(s);
    }

    fn finish(&self, step: &str) {
        if let Ok(mut bars) = self.bars.lock() {
            if let Some((b, _)) = bars.remove(step) {
                b.finish_and_clear();
                self.multi.remove(&b);
            }
        }
    }
}

impl Default for BarSink {
    fn default() -> Self {
        Self::new()
    }
}

impl EventSink for BarSink {
    fn emit(&self, event: &Event) {
        match event {
            Event::StepStarted { step, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} [{elapsed}]")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(step.clone());
                bar.set_message("running");
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Ok(mut bars) = self.bars.lock() {
                    bars.insert(step.clone(), (bar, Instant::now()));
                }
            }
            Event::Progress {
                step,
                done,
                total,
                items,
                failed_items,
                failed_mini_batches,
            } => {
                if let Ok(bars) = self.bars.lock() {
                    if let Some((bar, started)) = bars.get(step) {
                        if bar.length() != Some(*total) {
                            bar.set_length(*total);
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "{prefix:.bold} [{bar:30}] {pos}/{len} mini-batches {msg} ETA {eta}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                            );
                        }
                        bar.set_position(*done);
                        let secs = started.elapsed().as_secs_f64().max(0.001);
                        bar.set_message(format!(
                            "{:.0} items/s, {failed_items} failed items, {failed_mini_batches} failed mini-batches",
                            *items as f64 / secs
                        ));
                    }
                }
            }
            Event::StepReused {
                step,
                from_run,
                early_cutoff,
                ..
            } => self.println(format!(
                "{step}: reused output of run {from_run}{}",
                if *early_cutoff {
                    " (upstream output unchanged)"
                } else {
                    ""
                }
            )),
            Event::StepFinished {
                step, duration_ms, ..
            } => {
                self.finish(step);
                self.println(format!(
                    "{step}: done in {}",
                    crate::render::duration(*duration_ms)
                ));
            }
            Event::StepFailed { step, error, .. } => {
                self.finish(step);
                self.println(format!(
                    "{step}: FAILED: {}",
                    error.lines().next().unwrap_or("")
                ));
            }
            Event::StepSkipped { step, reason } => {
                self.println(format!("{step}: skipped ({reason})"))
            }
            Event::CacheEntryRejected { step, reason, .. } => self.println(format!(
                "{step}: cached output rejected ({reason}); running it again"
            )),
            Event::Message { step, text, .. } => self.println(format!("{step}: {text}")),
            _ => {}
        }
    }
}
