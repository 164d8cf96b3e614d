//! Text rendering: tables, durations, colours (only on a terminal, never with NO_COLOR) and
//! the graph formats.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use stepgraph_engine::SnapshotDataEdge;
use stepgraph_engine::{Decision, Plan};
use stepgraph_engine::{GraphSnapshot, StepRecord, StepStatus};

/// Milliseconds as `850ms`, `2.1s`, `3m05s`.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// Bytes as `512 B`, `1.5 KiB`, `3.2 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A table row for a step: its name and status word, then `cells`.
pub(crate) fn step_row(s: &StepRecord, cells: impl IntoIterator<Item = String>) -> Vec<String> {
    [s.name.clone(), status_word(s.status.as_str())]
        .into_iter()
        .chain(cells)
        .collect()
}

/// The paragraph telling that step `s` failed, and why.
pub(crate) fn step_failure(s: &StepRecord) -> String {
    format!(
        "\nstep {:?} failed:\n{}",
        s.name,
        s.error.as_deref().unwrap_or("").trim_end()
    )
}

/// A Unix time in ms as RFC 3339 (UTC, seconds).
pub(crate) fn time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The plural of a unit name (`mini-batch` -> `mini-batches`), for counts.
pub(crate) fn plural(unit: &str) -> String {
    let unit = if unit.is_empty() { "unit" } else { unit };
    if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| unit.ends_with(e))
    {
        format!("{unit}es")
    } else {
        format!("{unit}s")
    }
}

/// Whether stdout gets colours.
pub(crate) fn colours() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// `word` in a colour chosen by its meaning, when colours are on.
pub(crate) fn status_word(word: &str) -> String {
    if !colours() {
        return word.to_string();
    }
    let code = match word {
        "ran" | "succeeded" | "up to date" | "reuse" | "reused" => "32",
        "failed" | "cancelled" | "interrupted" => "31",
        "skipped" | "will run" | "run" => "33",
        _ => return word.to_string(),
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// The table printed after a run: one value per cell, under a header that names it (the
/// failed units' column is named by their unit when every counted step shares one, e.g.
/// `failed mini-batches`).
pub(crate) fn run_table(steps: &[StepRecord]) -> String {
    let counted: Vec<&StepRecord> = steps.iter().filter(|s| s.counts.has_units()).collect();
    let unit_header = match counted.first() {
        Some(first) if counted.iter().all(|s| s.counts.unit == first.counts.unit) => {
            format!("failed {}", plural(&first.counts.unit))
        }
        _ => "failed units".to_string(),
    };
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            let c = &s.counts;
            let counted = |n: u64| {
                if c.has_units() {
                    n.to_string()
                } else {
                    "-".into()
                }
            };
            step_row(
                s,
                [
                    // A failed step ran until it failed (a timeout shows here).
                    if matches!(s.status, StepStatus::Ran | StepStatus::Failed) {
                        duration(s.duration_ms)
                    } else {
                        "-".into()
                    },
                    counted(c.items),
                    counted(c.failed_items),
                    counted(c.failed_units),
                ],
            )
        })
        .collect();
    table(
        &[
            "step",
            "status",
            "duration",
            "items",
            "failed items",
            &unit_header,
        ],
        &rows,
    )
}

/// A table with left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(visible_len(c));
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(&c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i].saturating_sub(visible_len(&c)) + 2));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r.clone(), &mut out);
    }
    out
}

/// Length without ANSI colour codes.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut in_esc = false;
    for c in s.chars() {
        match (in_esc, c) {
            (false, '\x1b') => in_esc = true,
            (true, 'm') => in_esc = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// A step's cache status word for the graph, from a plan.
pub(crate) fn decision_word(d: &Decision) -> String {
    match d {
        Decision::Reuse { .. } => "would reuse".into(),
        Decision::Run { reason, .. } => format!("would run ({reason})"),
        Decision::DependsOnUpstream { upstream } => {
            format!("would run if {} change", upstream.join(", "))
        }
        Decision::Invalid { error } => format!("invalid: {error}"),
    }
}

/// Per-step status words: from a plan (specs) or a run record (runs).
pub(crate) type Statuses = BTreeMap<String, String>;

/// Statuses from a plan.
pub(crate) fn plan_statuses(plan: &Plan) -> Statuses {
    plan.steps
        .iter()
        .map(|s| (s.name.clone(), decision_word(&s.decision)))
        .collect()
}

/// The text form: steps in topological order with ports, edges and status.
pub(crate) fn graph_text(g: &GraphSnapshot, statuses: &Statuses) -> String {
    let mut out = format!("pipeline {}\n", g.pipeline);
    if !g.parameters.is_empty() {
        let ps: Vec<String> = g
            .parameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("parameters: {}\n", ps.join(", ")));
    }
    for n in &g.nodes {
        out.push_str(&format!(
            "\n{} [{}]{}\n",
            n.name,
            n.execution_type,
            statuses
                .get(&n.name)
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        ));
        for p in &n.inputs {
            let from = g
                .edges
                .iter()
                .find(|e| e.to == n.name && e.data.as_ref().is_some_and(|d| d.to_port == p.port))
                .map(|e| format!(" <- {}", e.from))
                .unwrap_or_default();
            let role = if p.role == "side" {
                "side input"
            } else {
                "input"
            };
            out.push_str(&format!(
                "  {role} {}: {} {}{from}\n",
                p.port, p.kind, p.data
            ));
        }
        for p in &n.outputs {
            let to: Vec<&str> = g
                .edges
                .iter()
                .filter(|e| {
                    e.from == n.name && e.data.as_ref().is_some_and(|d| d.from_port == p.port)
                })
                .map(|e| e.to.as_str())
                .collect();
            let to = if to.is_empty() {
                String::new()
            } else {
                format!(" -> {}", to.join(", "))
            };
            out.push_str(&format!("  output {}: {}{to}\n", p.port, p.data));
        }
        for e in g
            .edges
            .iter()
            .filter(|e| e.to == n.name && e.data.is_none())
        {
            out.push_str(&format!("  run_after {}\n", e.from));
        }
        if !n.allow_reuse {
            out.push_str("  allow_reuse: false\n");
        }
    }
    out
}

/// An input that reads a dataset: (dataset number, node number, port).
type DatasetInput<'g> = (usize, usize, &'g str);

/// The inputs that read datasets (not pipeline data), and the datasets by name with their
/// numbers (in order of first use).
fn dataset_inputs(g: &GraphSnapshot) -> (Vec<DatasetInput<'_>>, BTreeMap<&str, usize>) {
    let mut inputs = Vec::new();
    let mut datasets = BTreeMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for p in n.inputs.iter().filter(|p| p.kind != "pipeline_data") {
            let k = datasets.len();
            let d = *datasets.entry(p.data.as_str()).or_insert(k);
            inputs.push((d, i, p.port.as_str()));
        }
    }
    (inputs, datasets)
}

/// The edges between known nodes, as (producer number, consumer number, data edge).
fn numbered_edges(g: &GraphSnapshot) -> Vec<(usize, usize, Option<&SnapshotDataEdge>)> {
    let idx: BTreeMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    g.edges
        .iter()
        .filter_map(|e| {
            let (a, b) = (idx.get(e.from.as_str())?, idx.get(e.to.as_str())?);
            Some((*a, *b, e.data.as_ref()))
        })
        .collect()
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz `dot`.
pub(crate) fn graph_dot(g: &GraphSnapshot, statuses: &Statuses) -> String {
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n",
        dot_escape(&g.pipeline)
    );
    for (i, n) in g.nodes.iter().enumerate() {
        let status = statuses.get(&n.name).cloned().unwrap_or_default();
        let colour = if status.starts_with("would reuse") || status == "reused" {
            "palegreen"
        } else if status == "failed" {
            "lightpink"
        } else {
            "lightyellow"
        };
        out.push_str(&format!(
            "  n{i} [label=\"{}\\n{}\\n{}\", style=\"rounded,filled\", fillcolor={colour}];\n",
            dot_escape(&n.name),
            dot_escape(&n.execution_type),
            dot_escape(&status)
        ));
    }
    let (inputs, datasets) = dataset_inputs(g);
    for (d, i, port) in inputs {
        out.push_str(&format!(
            "  d{d} -> n{i} [label=\"{}\"];\n",
            dot_escape(port)
        ));
    }
    for (name, d) in &datasets {
        out.push_str(&format!(
            "  d{d} [shape=cylinder, label=\"{}\"];\n",
            dot_escape(name)
        ));
    }
    for (a, b, data) in numbered_edges(g) {
        match data {
            Some(d) => out.push_str(&format!(
                "  n{a} -> n{b} [label=\"{}\"];\n",
                dot_escape(&d.data)
            )),
            None => out.push_str(&format!(
                "  n{a} -> n{b} [style=dashed, label=\"run_after\"];\n"
            )),
        }
    }
    out.push_str("}\n");
    out
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

/// Mermaid flowchart.
pub(crate) fn graph_mermaid(g: &GraphSnapshot, statuses: &Statuses) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, n) in g.nodes.iter().enumerate() {
        let status = statuses
            .get(&n.name)
            .map(|s| format!("<br/>{}", mermaid_text(s)))
            .unwrap_or_default();
        out.push_str(&format!(
            "  n{i}[\"{}<br/><i>{}</i>{status}\"]\n",
            mermaid_text(&n.name),
            mermaid_text(&n.execution_type)
        ));
    }
    let (inputs, datasets) = dataset_inputs(g);
    for (d, i, _) in inputs {
        out.push_str(&format!("  d{d} --> n{i}\n"));
    }
    for (name, d) in &datasets {
        out.push_str(&format!("  d{d}[(\"{}\")]\n", mermaid_text(name)));
    }
    for (a, b, data) in numbered_edges(g) {
        match data {
            Some(d) => out.push_str(&format!("  n{a} -->|\"{}\"| n{b}\n", mermaid_text(&d.data))),
            None => out.push_str(&format!("  n{a} -.->|run_after| n{b}\n")),
        }
    }
    out
}

/// A step's units as people read them: `12 mini-batches (1 failed, 2 resumed)`, with
/// `, N reused` for a step that reused units from the unit memo (an incremental step).
pub(crate) fn units_summary(c: &stepgraph_engine::StepCounts) -> String {
    let reused = if c.reused_units > 0 {
        format!(", {} reused", stepgraph_engine::grouped(c.reused_units))
    } else {
        String::new()
    };
    format!(
        "{} {} ({} failed, {} resumed{reused})",
        c.units,
        plural(&c.unit),
        c.failed_units,
        c.resumed_units
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_table_says_one_thing_per_cell_and_stays_aligned() {
        use stepgraph_engine::StepCounts;
        let mut wide = StepRecord::new("a-step-with-a-long-name", StepStatus::Ran);
        wide.counts = StepCounts::in_units("mini-batch", 400);
        wide.counts.items = 2_000_000;
        wide.counts.failed_items = 12_345;
        wide.counts.failed_units = 7;
        let plain = StepRecord::new("b", StepStatus::Reused);
        let t = run_table(&[wide, plain]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0]
                .split("  ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect::<Vec<_>>(),
            [
                "step",
                "status",
                "duration",
                "items",
                "failed items",
                "failed mini-batches"
            ]
        );
        // Every column starts at the same offset in every line.
        let starts = |l: &str| -> Vec<usize> {
            let b = l.as_bytes();
            (0..b.len())
                .filter(|&i| b[i] != b' ' && (i == 0 || (i >= 2 && &b[i - 2..i] == b"  ")))
                .collect()
        };
        assert_eq!(starts(lines[0]), starts(lines[1]), "{t}");
        assert_eq!(starts(lines[0]), starts(lines[2]), "{t}");
        assert!(
            lines[1].contains("2000000  ") && lines[1].ends_with('7'),
            "{t}"
        );
        assert!(!t.contains("items,"), "one value per cell: {t}");
    }

    #[test]
    fn the_run_table_shows_how_long_a_failed_step_ran() {
        let mut failed = StepRecord::new("bad", StepStatus::Failed);
        failed.duration_ms = 61_000;
        let mut reused = StepRecord::new("old", StepStatus::Reused);
        reused.duration_ms = 5_000;
        let t = run_table(&[failed, reused]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains(&duration(61_000)), "{t}");
        assert!(!lines[2].contains(&duration(5_000)), "{t}");
    }

    #[test]
    fn unit_names_are_made_plural_for_counts() {
        assert_eq!(plural("mini-batch"), "mini-batches");
        assert_eq!(plural("page"), "pages");
        assert_eq!(plural("box"), "boxes");
        assert_eq!(plural(""), "units");
    }
}
