//! `stepgraph report`: one self-contained HTML page about a run (inline CSS, SVG and script;
//! nothing fetched), like Azure ML studio's or Kedro-Viz's view of a run: the graph with each
//! step's status, a timeline of the steps, the mini-batch throughput of each ParallelRunStep,
//! the failures with their error text, and why each step ran or was reused.
//!
//! Every text that comes from the user (names, parameters, errors) is HTML-escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use stepgraph_engine::{RunRecord, StepRecord, StepStatus};

use crate::render;
use crate::svg::{escape, graph_svg_element, LayoutFailed, Look};

/// One finished mini-batch, from a step's `logs/sys/events.txt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Done {
    /// When it finished (Unix ms).
    pub(crate) at_ms: u64,
    /// Its items.
    pub(crate) items: u64,
}

/// The finished mini-batches recorded in `events.txt` (lines
/// `mini-batch done N at UNIX_MS ms: K items on worker-W`), in time order; none when the file
/// is missing or was written before they were recorded.
pub(crate) fn read_done(events: &Path) -> Vec<Done> {
    let Ok(bytes) = fs_err::read(events) else {
        return Vec::new();
    };
    let mut out: Vec<Done> = String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(parse_done)
        .collect();
    out.sort_by_key(|d| d.at_ms);
    out
}

fn parse_done(line: &str) -> Option<Done> {
    let rest = line.strip_prefix(stepgraph_steps::DONE_PREFIX)?;
    let (_, rest) = rest.split_once(" at ")?;
    let (at, rest) = rest.split_once(" ms: ")?;
    let (items, _) = rest.split_once(" items")?;
    Some(Done {
        at_ms: at.trim().parse().ok()?,
        items: items.trim().parse().ok()?,
    })
}

/// Why a step ran or was reused, in words.
pub(crate) fn reason(s: &StepRecord) -> String {
    match (s.status, &s.reused_from, &s.reason, &s.error) {
        (StepStatus::Reused, Some(from), _, _) => format!("reused: output of run {from}"),
        (StepStatus::Reused, None, _, _) => "reused".into(),
        (_, _, Some(r), _) => format!("ran: {r}"),
        (StepStatus::Skipped, _, _, Some(e)) => format!("skipped: {e}"),
        _ => "-".into(),
    }
}

/// The first line of a text (for table cells; the whole text is in the failures section).
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The HTML page for run `rec`; `done` holds the finished mini-batches of each step that
/// recorded them.
pub(crate) fn report_html(
    rec: &RunRecord,
    done: &BTreeMap<String, Vec<Done>>,
) -> Result<String, LayoutFailed> {
    let statuses: render::Statuses = rec
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.status.as_str().to_string()))
        .collect();
    let graph = graph_svg_element(&rec.graph, &statuses)?;
    let total_ms = rec
        .finished_unix_ms
        .map(|f| f.saturating_sub(rec.started_unix_ms));
    let mut h = String::new();
    let title = format!("stepgraph run {} of {}", rec.id, rec.pipeline);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>",
        escape(&title)
    );
    let _ = writeln!(
        h,
        "<header><h1>Run <code>{}</code> of pipeline <code>{}</code></h1>\n\
         <p class=\"meta\"><span class=\"badge {}\">{}</span> started {} · {} · {}</p>",
        escape(&rec.id),
        escape(&rec.pipeline),
        Look::of(rec.status.as_str()).class(),
        escape(rec.status.as_str()),
        escape(&render::time(rec.started_unix_ms)),
        total_ms
            .map(|d| format!("took {}", render::duration(d)))
            .unwrap_or_else(|| "not finished".into()),
        escape(&counts_line(rec)),
    );
    if !rec.params.is_empty() {
        let ps: Vec<String> = rec
            .params
            .iter()
            .map(|(k, v)| format!("<code>{}={}</code>", escape(k), escape(&v.to_string())))
            .collect();
        let _ = writeln!(h, "<p class=\"meta\">parameters: {}</p>", ps.join(" "));
    }
    h.push_str("</header>\n");

    let _ = write!(
        h,
        "<section id=\"graph\"><h2>Graph</h2>\n<div class=\"graph\">{graph}</div></section>\n"
    );

    h.push_str(
        "<section id=\"steps\"><h2>Steps</h2>\n<table>\n<thead><tr><th>step</th><th>status</th>\
         <th>duration</th><th>items</th><th>failed items</th><th>units</th><th>why</th></tr>\
         </thead>\n<tbody>\n",
    );
    for s in &rec.steps {
        let c = &s.counts;
        let (items, failed, units) = if c.has_units() {
            (
                c.items.to_string(),
                c.failed_items.to_string(),
                render::units_summary(c),
            )
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        let why = reason(s);
        let _ = writeln!(
            h,
            "<tr class=\"step-row\" data-step=\"{}\"><td class=\"name\">{}</td>\
             <td><span class=\"badge {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td title=\"{}\">{}</td></tr>",
            escape(&s.name),
            escape(&s.name),
            Look::of(s.status.as_str()).class(),
            escape(s.status.as_str()),
            render::duration(s.duration_ms),
            items,
            failed,
            escape(&units),
            escape(&why),
            escape(first_line(&why)),
        );
    }
    h.push_str("</tbody></table></section>\n");

    let _ = writeln!(
        h,
        "<section id=\"timeline\"><h2>Timeline</h2>\n{}</section>",
        gantt(rec)
    );

    h.push_str("<section id=\"throughput\"><h2>Mini-batch throughput</h2>\n");
    let mut any = false;
    for s in rec.steps.iter().filter(|s| s.counts.unit == "mini-batch") {
        any = true;
        let _ = writeln!(h, "<h3>{}</h3>", escape(&s.name));
        match done.get(&s.name).filter(|d| !d.is_empty()) {
            Some(d) => h.push_str(&throughput(s, d)),
            None if s.status == StepStatus::Reused => {
                let _ = writeln!(
                    h,
                    "<p class=\"note\">reused: its mini-batches ran in run {}.</p>",
                    escape(s.reused_from.as_deref().unwrap_or("?"))
                );
            }
            None => h.push_str(
                "<p class=\"note\">no mini-batch timings recorded in this run's logs.</p>\n",
            ),
        }
    }
    if !any {
        h.push_str("<p class=\"note\">no ParallelRunStep in this run.</p>\n");
    }
    h.push_str("</section>\n");

    h.push_str("<section id=\"failures\"><h2>Failures</h2>\n");
    let failed: Vec<&StepRecord> = rec
        .steps
        .iter()
        .filter(|s| matches!(s.status, StepStatus::Failed | StepStatus::Cancelled))
        .collect();
    if failed.is_empty() {
        h.push_str("<p class=\"note\">no step failed.</p>\n");
    }
    for s in failed {
        let _ = writeln!(
            h,
            "<div class=\"failure\" data-step=\"{}\"><h3>{} <span class=\"badge {}\">{}</span></h3>\
             <pre>{}</pre><p class=\"note\">all logs: <code>stepgraph logs {} {}</code></p></div>",
            escape(&s.name),
            escape(&s.name),
            Look::of(s.status.as_str()).class(),
            escape(s.status.as_str()),
            escape(s.error.as_deref().unwrap_or("(no error text recorded)").trim_end()),
            escape(&rec.id),
            escape(&s.name),
        );
    }
    h.push_str("</section>\n");
    let _ = writeln!(
        h,
        "<footer>made by <code>stepgraph report</code> at {}</footer>\n<script>{JS}</script>\n\
         </body>\n</html>",
        escape(&render::time(now_ms()))
    );
    Ok(h)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How many steps of a run ran, were reused, failed and were skipped, in words.
pub(crate) fn counts_line(rec: &RunRecord) -> String {
    let n = |st: StepStatus| rec.steps.iter().filter(|s| s.status == st).count();
    format!(
        "{} ran, {} reused, {} failed, {} skipped",
        n(StepStatus::Ran),
        n(StepStatus::Reused),
        n(StepStatus::Failed),
        n(StepStatus::Skipped)
    )
}

/// Width of the charts' drawing area (px).
const CHART_W: f64 = 640.0;

/// The steps on a time axis from the run's start: one bar per step (a Gantt chart).
fn gantt(rec: &RunRecord) -> String {
    let t0 = rec.started_unix_ms;
    // Records written before steps' starts were recorded: one step after the other.
    let mut cursor = 0u64;
    let bars: Vec<(&StepRecord, u64, u64)> = rec
        .steps
        .iter()
        .map(|s| {
            let start = s
                .started_unix_ms
                .map(|t| t.saturating_sub(t0))
                .unwrap_or(cursor);
            cursor = start + s.duration_ms;
            (s, start, s.duration_ms)
        })
        .collect();
    let end = bars
        .iter()
        .map(|(_, a, d)| a + d)
        .chain(rec.finished_unix_ms.map(|f| f.saturating_sub(t0)))
        .max()
        .unwrap_or(0)
        .max(1);
    let label_w = 180.0;
    let row_h = 24.0;
    let width = label_w + CHART_W + 90.0;
    let height = row_h * bars.len() as f64 + 34.0;
    let scale = CHART_W / end as f64;
    let mut s = format!(
        "<svg class=\"gantt\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n"
    );
    for (i, (step, start, dur)) in bars.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let x = label_w + *start as f64 * scale;
        let w = (*dur as f64 * scale).max(2.0);
        let look = Look::of(step.status.as_str());
        let _ = writeln!(
            s,
            "<g class=\"bar\" data-step=\"{}\"><title>{}: {} {} (from +{})</title>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" rx=\"3\" fill=\"{}\" \
             stroke=\"#555\" stroke-width=\"0.5\"/>\
             <text x=\"{:.1}\" y=\"{}\" class=\"dur\">{}</text></g>",
            escape(&step.name),
            escape(&step.name),
            escape(step.status.as_str()),
            render::duration(*dur),
            render::duration(*start),
            label_w - 8.0,
            y + 14.0,
            escape(&truncate(&step.name, 24)),
            row_h - 6.0,
            look.fill(),
            x + w + 4.0,
            y + 14.0,
            render::duration(*dur),
        );
    }
    let axis_y = row_h * bars.len() as f64 + 8.0;
    let _ = writeln!(
        s,
        "<line x1=\"{label_w}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#555\"/>\
         <text x=\"{label_w}\" y=\"{}\" class=\"axis\">0</text>\
         <text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"end\">{}</text>\n</svg>",
        label_w + CHART_W,
        axis_y + 16.0,
        label_w + CHART_W,
        axis_y + 16.0,
        render::duration(end),
    );
    s
}

/// Items per second over the step's run time, from its finished mini-batches.
fn throughput(step: &StepRecord, done: &[Done]) -> String {
    let first = done.first().map(|d| d.at_ms).unwrap_or(0);
    let start = step.started_unix_ms.unwrap_or(first).min(first);
    let end = done.last().map(|d| d.at_ms).unwrap_or(start).max(start + 1);
    let span = end - start;
    let n = done.len().clamp(1, 30);
    let bucket = (span as f64 / n as f64).max(1.0);
    let mut items = vec![0u64; n];
    for d in done {
        let i = (((d.at_ms - start) as f64 / bucket) as usize).min(n - 1);
        items[i] += d.items;
    }
    let rates: Vec<f64> = items
        .iter()
        .map(|k| *k as f64 / (bucket / 1000.0))
        .collect();
    let max = rates.iter().copied().fold(0.0, f64::max).max(1e-9);
    let total_items: u64 = done.iter().map(|d| d.items).sum();
    let (left, chart_h) = (60.0, 120.0);
    let width = left + CHART_W + 20.0;
    let height = chart_h + 40.0;
    let bar_w = CHART_W / n as f64;
    let mut s = format!(
        "<p class=\"note\">{} mini-batches, {} items in {}: {:.1} items/s on average.</p>\n\
         <svg class=\"throughput\" data-step=\"{}\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\">\n",
        done.len(),
        total_items,
        render::duration(span),
        total_items as f64 / (span as f64 / 1000.0).max(1e-3),
        escape(&step.name),
    );
    for (i, r) in rates.iter().enumerate() {
        let h = r / max * chart_h;
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#64b5f6\">\
             <title>+{}: {r:.1} items/s</title></rect>",
            left + i as f64 * bar_w,
            10.0 + chart_h - h,
            (bar_w - 1.0).max(1.0),
            render::duration((i as f64 * bucket) as u64),
        );
    }
    let _ = writeln!(
        s,
        "\n<line x1=\"{left}\" y1=\"{b}\" x2=\"{}\" y2=\"{b}\" stroke=\"#555\"/>\
         <line x1=\"{left}\" y1=\"10\" x2=\"{left}\" y2=\"{b}\" stroke=\"#555\"/>\
         <text x=\"{}\" y=\"18\" text-anchor=\"end\" class=\"axis\">{max:.1}/s</text>\
         <text x=\"{}\" y=\"{b}\" text-anchor=\"end\" class=\"axis\">0</text>\
         <text x=\"{left}\" y=\"{}\" class=\"axis\">0</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"axis\">{}</text>\n</svg>",
        left + CHART_W,
        left - 4.0,
        left - 4.0,
        10.0 + chart_h + 18.0,
        left + CHART_W,
        10.0 + chart_h + 18.0,
        render::duration(span),
        b = 10.0 + chart_h,
    );
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

const CSS: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 0 auto;
  max-width: 1100px; padding: 16px 24px; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0.2em 0; } h2 { font-size: 1.15em; border-bottom: 1px solid #ddd;
  padding-bottom: 4px; margin-top: 1.6em; } h3 { font-size: 1em; margin: 1em 0 0.3em; }
code { background: #eee; padding: 0 4px; border-radius: 3px; }
.meta { color: #555; margin: 0.3em 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 0.9em;
  border: 1px solid #999; }
.status-reuse { background: #c8e6c9; } .status-run { background: #fff3b0; }
.status-ran { background: #bbdefb; } .status-failed { background: #f8bbd0; }
.status-skipped { background: #e0e0e0; } .status-other { background: #fff; }
.graph { overflow-x: auto; background: #fff; border: 1px solid #ddd; padding: 8px; }
.graph g.step { cursor: pointer; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
tr.highlight { outline: 2px solid #1976d2; }
svg.gantt, svg.throughput { background: #fff; border: 1px solid #ddd; font-size: 12px; }
svg text { font-family: system-ui, sans-serif; } .axis, .dur { fill: #555; font-size: 11px; }
.failure pre { background: #fff0f3; border: 1px solid #f3b6c6; padding: 8px; overflow-x: auto;
  white-space: pre-wrap; }
.note { color: #666; } footer { margin-top: 2em; color: #888; font-size: 0.85em; }
";

/// Clicking a step in the graph or the timeline highlights its row in the table.
const JS: &str = "
document.querySelectorAll('[data-step]').forEach(function (el) {
  if (el.classList.contains('step-row')) return;
  el.addEventListener('click', function () {
    document.querySelectorAll('tr.step-row').forEach(function (row) {
      var hit = row.dataset.step === el.dataset.step;
      row.classList.toggle('highlight', hit);
      if (hit) row.scrollIntoView({ block: 'center', behavior: 'smooth' });
    });
  });
});
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_mini_batches_are_read_from_events_lines() {
        let line = format!(
            "{}3 at 1700000000123 ms: 5 items on worker-1",
            stepgraph_steps::DONE_PREFIX
        );
        assert_eq!(
            parse_done(&line),
            Some(Done {
                at_ms: 1_700_000_000_123,
                items: 5
            })
        );
        assert_eq!(
            parse_done("mini-batch 3 try 1 on worker-0 failed: boom"),
            None
        );
    }
}
