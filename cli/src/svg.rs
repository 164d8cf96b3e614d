//! `graph --format svg`: the graph laid out in pure Rust (the `layout-rs` crate, no graphviz),
//! each step filled with the colour of its status, and a legend.

use std::collections::BTreeMap;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::geometry::Point;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;
use stepgraph_engine::GraphSnapshot;

use crate::render::Statuses;

/// The layout library stopped on a graph it could not lay out.
#[derive(Debug, thiserror::Error)]
#[error("the graph could not be laid out as SVG (try `--format dot | dot -Tsvg`)")]
pub(crate) struct LayoutFailed;

/// What a status word means for colouring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Look {
    /// Would reuse, or reused.
    Reuse,
    /// Would run.
    Run,
    /// Ran in the run.
    Ran,
    /// Failed, cancelled, or cannot be planned.
    Failed,
    /// Skipped after an upstream failure.
    Skipped,
    /// Anything else (pending, running, no status).
    Other,
}

impl Look {
    /// The look of a status word from a plan (`would reuse`, `would run (…)`, `invalid: …`)
    /// or a run record (`reused`, `ran`, `failed`, `skipped`, …).
    pub(crate) fn of(status: &str) -> Look {
        if status.starts_with("would reuse") || status == "reused" {
            Look::Reuse
        } else if status.starts_with("would run") {
            Look::Run
        } else if status == "ran" {
            Look::Ran
        } else if status.starts_with("failed")
            || status == "cancelled"
            || status.starts_with("invalid")
        {
            Look::Failed
        } else if status == "skipped" {
            Look::Skipped
        } else {
            Look::Other
        }
    }

    /// Fill colour (CSS hex).
    pub(crate) fn fill(self) -> &'static str {
        match self {
            Look::Reuse => "#c8e6c9",
            Look::Run => "#fff3b0",
            Look::Ran => "#bbdefb",
            Look::Failed => "#f8bbd0",
            Look::Skipped => "#e0e0e0",
            Look::Other => "#ffffff",
        }
    }

    /// The CSS class name (`status-reuse`, …).
    pub(crate) fn class(self) -> &'static str {
        match self {
            Look::Reuse => "status-reuse",
            Look::Run => "status-run",
            Look::Ran => "status-ran",
            Look::Failed => "status-failed",
            Look::Skipped => "status-skipped",
            Look::Other => "status-other",
        }
    }
}

/// Fill of dataset nodes.
const DATASET_FILL: &str = "#e8eaf6";
/// Font size of node labels.
const FONT: usize = 14;
/// Longest status text shown in a node (the full one is in its `data-status`).
const STATUS_CHARS: usize = 40;

/// Escape text for an XML/HTML attribute or text node.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(hex: &str) -> Color {
    Color::from_name(hex).unwrap_or_else(|| Color::fast("white"))
}

fn shortened(s: &str) -> String {
    if s.chars().count() <= STATUS_CHARS {
        s.to_string()
    } else {
        let head: String = s.chars().take(STATUS_CHARS - 1).collect();
        format!("{head}…")
    }
}

fn node(label: &str, fill: &str, rounded: usize, properties: String) -> Element {
    let shape = ShapeKind::new_box(label);
    let look = StyleAttr::new(Color::fast("black"), 1, Some(colour(fill)), rounded, FONT);
    // The layout's own estimate takes a whole font size per character: far too wide.
    let widest = label.lines().map(|l| l.chars().count()).max().unwrap_or(1);
    let lines = label.lines().count().max(1);
    let size = Point::new(
        widest as f64 * FONT as f64 * 0.62 + 24.0,
        lines as f64 * FONT as f64 * 1.25 + 14.0,
    );
    Element::create_with_properties(shape, look, Orientation::LeftToRight, size, properties)
}

/// The graph as a standalone SVG document (with the XML declaration).
pub(crate) fn graph_svg(g: &GraphSnapshot, statuses: &Statuses) -> Result<String, LayoutFailed> {
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n{}\n",
        graph_svg_element(g, statuses)?
    ))
}

/// The graph as one `<svg>` element, to inline in HTML: steps coloured by status (each a
/// `<g class="step status-…" data-step="NAME">`), datasets, edges named by their data, and a
/// legend below.
pub(crate) fn graph_svg_element(
    g: &GraphSnapshot,
    statuses: &Statuses,
) -> Result<String, LayoutFailed> {
    let legend = legend_entries(statuses);
    if g.nodes.is_empty() {
        return Ok(finish(
            "<text x=\"10\" y=\"20\">(no steps)</text>".into(),
            200.0,
            30.0,
            &legend,
        ));
    }
    let (body, bottom) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| layout_body(g, statuses)))
            .map_err(|_| LayoutFailed)?;
    let (inner, w, h) = split_svg(&body).ok_or(LayoutFailed)?;
    // The layout's SVG height counts every label's length as height: the nodes' real bottom.
    Ok(finish(inner.to_string(), w, h.min(bottom + 10.0), &legend))
}

/// The layout library's SVG of the nodes and edges, and the bottom of the lowest node.
fn layout_body(g: &GraphSnapshot, statuses: &Statuses) -> (String, f64) {
    let mut vg = VisualGraph::new(Orientation::LeftToRight);
    let mut handles = BTreeMap::new();
    for n in &g.nodes {
        let status = statuses.get(&n.name).map(String::as_str).unwrap_or("");
        let look = Look::of(status);
        let label = if status.is_empty() {
            format!("{}\n[{}]", n.name, n.execution_type)
        } else {
            format!("{}\n[{}]\n{}", n.name, n.execution_type, shortened(status))
        };
        let props = format!(
            "class=\"step {}\" data-step=\"{}\" data-status=\"{}\"",
            look.class(),
            escape(&n.name),
            escape(status)
        );
        handles.insert(
            n.name.as_str(),
            vg.add_node(node(&label, look.fill(), 8, props)),
        );
    }
    let mut datasets = BTreeMap::new();
    for n in &g.nodes {
        for p in n.inputs.iter().filter(|p| p.kind != "pipeline_data") {
            let d = *datasets.entry(p.data.as_str()).or_insert_with(|| {
                let props = format!("class=\"dataset\" data-dataset=\"{}\"", escape(&p.data));
                vg.add_node(node(&p.data, DATASET_FILL, 0, props))
            });
            if let Some(to) = handles.get(n.name.as_str()) {
                vg.add_edge(arrow(&p.port, LineStyleKind::Normal), d, *to);
            }
        }
    }
    for e in &g.edges {
        let (Some(a), Some(b)) = (handles.get(e.from.as_str()), handles.get(e.to.as_str())) else {
            continue;
        };
        match &e.data {
            Some(d) => vg.add_edge(arrow(&d.data, LineStyleKind::Normal), *a, *b),
            None => vg.add_edge(arrow("run_after", LineStyleKind::Dashed), *a, *b),
        }
    }
    let mut svg = SVGWriter::new();
    vg.do_it(false, false, false, &mut svg);
    let bottom = vg
        .iter_nodes()
        .map(|n| vg.pos(n).bottom(true))
        .fold(0.0, f64::max);
    (svg.finalize(), bottom)
}

fn arrow(text: &str, style: LineStyleKind) -> Arrow {
    let look = StyleAttr::new(Color::fast("dimgray"), 1, None, 0, 12);
    Arrow::new(
        LineEndKind::None,
        LineEndKind::Arrow,
        style,
        text,
        &look,
        &None,
        &None,
    )
}

/// The inside of the layout's `<svg …>` element and its width and height.
fn split_svg(doc: &str) -> Option<(&str, f64, f64)> {
    let start = doc.find("<svg ")?;
    let open_end = start + doc[start..].find('>')?;
    let open = &doc[start..open_end];
    let attr = |name: &str| -> Option<f64> {
        let i = open.find(&format!(" {name}=\""))? + name.len() + 3;
        let j = i + open[i..].find('"')?;
        open[i..j].trim().parse().ok()
    };
    let (w, h) = (attr("width")?, attr("height")?);
    let end = doc.rfind("</svg>")?;
    Some((doc.get(open_end + 1..end)?, w, h))
}

/// The legend's entries: (label, look), in the order of the statuses' kind (plan or run).
fn legend_entries(statuses: &Statuses) -> Vec<(&'static str, &'static str)> {
    let plan = statuses.is_empty()
        || statuses
            .values()
            .any(|s| s.starts_with("would") || s.starts_with("invalid"));
    let looks: &[(&str, Look)] = if plan {
        &[
            ("would reuse", Look::Reuse),
            ("would run", Look::Run),
            ("failed / invalid", Look::Failed),
        ]
    } else {
        &[
            ("reused", Look::Reuse),
            ("ran", Look::Ran),
            ("failed", Look::Failed),
            ("skipped", Look::Skipped),
        ]
    };
    looks
        .iter()
        .map(|(l, k)| (*l, k.fill()))
        .chain([("dataset", DATASET_FILL)])
        .collect()
}

/// The `<svg>` element: the graph's inside, then the legend below it.
fn finish(inner: String, w: f64, h: f64, legend: &[(&str, &str)]) -> String {
    let mut items = String::new();
    let mut x = 10.0;
    let y = h + 12.0;
    for (label, fill) in legend {
        items.push_str(&format!(
            "<rect x=\"{x}\" y=\"{y}\" width=\"16\" height=\"16\" rx=\"3\" fill=\"{fill}\" \
             stroke=\"black\" stroke-width=\"1\"/><text x=\"{}\" y=\"{}\">{}</text>",
            x + 22.0,
            y + 13.0,
            escape(label)
        ));
        x += 22.0 + 8.0 * label.chars().count() as f64 + 24.0;
    }
    let width = w.max(x).ceil();
    let height = (y + 26.0).ceil();
    format!(
        "<svg class=\"stepgraph-graph\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" xmlns=\"http://www.w3.org/2000/svg\">\n\
         <style>.stepgraph-graph text {{ font-family: sans-serif; }} \
         .stepgraph-graph .legend text {{ font-size: 13px; }}</style>\n\
         <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n\
         {inner}\n<g class=\"legend\">{items}</g>\n</svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_get_their_colours() {
        assert_eq!(Look::of("would reuse"), Look::Reuse);
        assert_eq!(Look::of("would run (never run)"), Look::Run);
        assert_eq!(Look::of("would run if a change"), Look::Run);
        assert_eq!(Look::of("reused"), Look::Reuse);
        assert_eq!(Look::of("failed"), Look::Failed);
        assert_eq!(
            Look::of("failed in run 1; would run (never run)"),
            Look::Failed
        );
        assert_eq!(Look::of("invalid: no such file"), Look::Failed);
        assert_eq!(Look::of("skipped"), Look::Skipped);
    }

    #[test]
    fn the_layout_header_is_split_off() {
        let doc = "<?xml?><svg width=\"10.5\" height=\"20\" viewBox=\"0 0 10.5 20\" x=\"\">\
                   <g/></svg>";
        let (inner, w, h) = split_svg(doc).expect("an svg");
        assert_eq!((inner, w, h), ("<g/>", 10.5, 20.0));
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
