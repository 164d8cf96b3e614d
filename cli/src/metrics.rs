//! The metrics steps record in their run folder (`<step>/metrics.jsonl`, written by
//! `Run.get_context().log(..)` & co. in the Python `azureml` shim), summarised for
//! `stepgraph runs show`: per step and metric, how many values and the last one.

use std::collections::BTreeMap;

use serde_json::Value;
use stepgraph_engine::RunLayout;

/// The longest value shown (longer ones end with `…`).
const MAX_VALUE_CHARS: usize = 60;

/// Rows `step, metric, kind, values, last` for the steps `steps` of the run laid out by
/// `layout`, in step order then first-logged order. Lines that are not JSON objects are
/// counted in a row of kind `unreadable`.
pub(crate) fn rows(layout: &RunLayout, steps: &[&str]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for step in steps {
        let Ok(text) = fs_err::read_to_string(layout.metrics_file(step)) else {
            continue;
        };
        // (kind, name) -> (first position, count, last value)
        let mut seen: BTreeMap<(String, String), (usize, usize, String)> = BTreeMap::new();
        let mut unreadable = 0;
        for (i, line) in text.lines().enumerate() {
            let record: Value = match serde_json::from_str(line) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    unreadable += 1;
                    continue;
                }
            };
            let field = |k: &str| {
                record
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string()
            };
            let entry = seen
                .entry((field("kind"), field("name")))
                .or_insert((i, 0, String::new()));
            entry.1 += 1;
            entry.2 = shown(record.get("value").unwrap_or(&Value::Null));
        }
        let mut metrics: Vec<_> = seen.into_iter().collect();
        metrics.sort_by_key(|(_, (first, _, _))| *first);
        for ((kind, name), (_, count, last)) in metrics {
            out.push(vec![step.to_string(), name, kind, count.to_string(), last]);
        }
        if unreadable > 0 {
            out.push(vec![
                step.to_string(),
                "-".into(),
                "unreadable".into(),
                unreadable.to_string(),
                "-".into(),
            ]);
        }
    }
    out
}

/// A value as shown: strings bare, anything else as compact JSON, at most
/// [`MAX_VALUE_CHARS`] characters.
fn shown(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // Control characters never reach the terminal (a metric is user data).
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_VALUE_CHARS {
        let cut: String = text.chars().take(MAX_VALUE_CHARS - 1).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summarised_per_step_and_name_in_logged_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = RunLayout::new(dir.path());
        fs_err::create_dir_all(layout.step_dir("score")).expect("mkdir");
        fs_err::write(
            layout.metrics_file("score"),
            concat!(
                r#"{"kind":"log","name":"rows","value":3}"#,
                "\n",
                r#"{"kind":"tag","name":"model","value":"iris-prs:1"}"#,
                "\n",
                r#"{"kind":"log","name":"rows","value":2}"#,
                "\n",
                r#"{"kind":"log_row","name":"fit","value":{"a":1}}"#,
                "\n",
                "not json\n",
                r#"{"kind":"log","name":"note","value":"a\u001b[31mb"}"#,
                "\n",
            ),
        )
        .expect("write");
        let rows = rows(&layout, &["score", "report"]);
        let expected: Vec<Vec<&str>> = vec![
            vec!["score", "rows", "log", "2", "2"],
            vec!["score", "model", "tag", "1", "iris-prs:1"],
            vec!["score", "fit", "log_row", "1", r#"{"a":1}"#],
            vec!["score", "note", "log", "1", "a [31mb"],
            vec!["score", "-", "unreadable", "1", "-"],
        ];
        assert_eq!(rows, expected);
        assert_eq!(shown(&Value::String("x".repeat(100))).chars().count(), 60);
    }
}
