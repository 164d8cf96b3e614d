//! Rendering run events: indicatif bars on a terminal, plain lines when piped, JSON lines
//! with `--json`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stepgraph_engine::{Event, EventSink};

/// JSON lines on stdout, one per event.
pub(crate) struct JsonSink;

impl EventSink for JsonSink {
    fn emit(&self, event: &Event) {
        if let Ok(line) = serde_json::to_string(event) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// The one-line description of a step event, shared by the plain and bar renderers.
fn step_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::StepStarted { step, key } => {
            format!("{step}: running (key {})", key.get(..12).unwrap_or(key))
        }
        Event::StepReused {
            step,
            from_run,
            early_cutoff,
            ..
        } => format!(
            "{step}: reused output of run {from_run}{}",
            if *early_cutoff {
                " (upstream output unchanged)"
            } else {
                ""
            }
        ),
        Event::CacheEntryRejected { step, reason, .. } => {
            format!("{step}: cached output rejected ({reason}); running it again")
        }
        Event::StepFinished {
            step, duration_ms, ..
        } => format!("{step}: done in {}", crate::render::duration(*duration_ms)),
        Event::StepFailed { step, error, .. } => {
            format!("{step}: FAILED: {}", error.lines().next().unwrap_or(""))
        }
        Event::StepSkipped { step, reason } => format!("{step}: skipped ({reason})"),
        Event::Message { step, text, .. } => format!("{step}: {text}"),
        _ => return None,
    })
}

/// Plain lines on stderr (progress at most every 2 s per step).
#[derive(Default)]
pub(crate) struct PlainSink {
    last: Mutex<HashMap<String, Instant>>,
}

impl EventSink for PlainSink {
    fn emit(&self, event: &Event) {
        if let Some((step, p)) = Figures::of(event) {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            let now = Instant::now();
            let due = p.done == p.total
                || last
                    .get(step)
                    .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(2));
            if due {
                last.insert(step.to_string(), now);
                crate::out::errln!(
                    "{step}: {}/{} {}, {} items, {} failed",
                    p.done,
                    p.total,
                    crate::render::plural(p.unit),
                    p.items,
                    p.failed_items
                );
            }
        } else if let Some(line) = step_line(event) {
            crate::out::errln!("{line}");
        }
    }
}

/// Live bars: one per running step.
pub(crate) struct BarSink {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, (ProgressBar, Instant)>>,
}

impl BarSink {
    /// Bars drawn on stderr.
    pub(crate) fn new() -> Self {
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

    fn start(&self, step: &str) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(step.to_string());
        bar.set_message("running");
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(step.to_string(), (bar, Instant::now()));
        }
    }

    fn progress(&self, step: &str, p: Figures<'_>) {
        let units = crate::render::plural(p.unit);
        let Ok(bars) = self.bars.lock() else { return };
        let Some((bar, started)) = bars.get(step) else {
            return;
        };
        if bar.length() != Some(p.total) {
            bar.set_length(p.total);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix:.bold}} [{{bar:30}}] {{pos}}/{{len}} {units} {{msg}} ETA {{eta}}"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
        }
        bar.set_position(p.done);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        // An incremental step: the reused mini-batches apart from those it runs.
        let reused = if p.reused > 0 {
            format!(
                "{} reused, {} to run, ",
                stepgraph_engine::grouped(p.reused),
                stepgraph_engine::grouped(p.total.saturating_sub(p.reused))
            )
        } else {
            String::new()
        };
        bar.set_message(format!(
            "{reused}{:.0} items/s, {} failed items, {} failed {units}",
            p.items as f64 / secs,
            p.failed_items,
            p.failed_units
        ));
    }
}

/// The figures of one progress event.
struct Figures<'a> {
    unit: &'a str,
    done: u64,
    total: u64,
    items: u64,
    failed_items: u64,
    failed_units: u64,
    reused: u64,
}

impl<'a> Figures<'a> {
    /// The step and figures of a progress event; `None` for any other event.
    fn of(event: &'a Event) -> Option<(&'a str, Self)> {
        match event {
            Event::Progress {
                step,
                unit,
                done,
                total,
                items,
                failed_items,
                failed_units,
                reused,
            } => Some((
                step,
                Figures {
                    unit,
                    done: *done,
                    total: *total,
                    items: *items,
                    failed_items: *failed_items,
                    failed_units: *failed_units,
                    reused: *reused,
                },
            )),
            _ => None,
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
            Event::StepStarted { step, .. } => self.start(step),
            Event::Progress { .. } => {
                if let Some((step, p)) = Figures::of(event) {
                    self.progress(step, p);
                }
            }
            other => {
                if let Event::StepFinished { step, .. } | Event::StepFailed { step, .. } = other {
                    self.finish(step);
                }
                if let Some(line) = step_line(other) {
                    self.println(line);
                }
            }
        }
    }
}
