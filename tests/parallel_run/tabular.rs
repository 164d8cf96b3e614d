//! ParallelRunStep over TabularDatasets: CSV cut by bytes, JSON Lines, and partition_keys with
//! a two-argument `run(mini_batch, mini_batch_context)`. Scripts accept a pandas DataFrame and
//! a list of dicts alike (pandas is optional).

use std::path::Path;

use stepgraph_engine::TabularDataset;

use stepgraph_steps::ParallelRunConfigBuilder;

use crate::common::Workspace;
use crate::parallel_run::support::{
    lines, output, pandas_or_skip, python_entry, ran, run_csv, run_in, step, TestResult,
    UsualSetUp, PY_ROWS,
};

/// Write the entry `scripts/<name>` under `root`: `import os`, [`PY_ROWS`], then `code`; and
/// start a config builder for it.
fn rows_entry(root: &Path, name: &str, code: &str) -> ParallelRunConfigBuilder {
    python_entry(root, name, &format!("import os\n{PY_ROWS}{code}")).rows_as_available()
}

/// Mini-batches of CSV rows of these byte sizes, cut as the partitioner does: a mini-batch
/// takes whole rows until it holds at least `max` bytes.
fn expected_batches(row_sizes: &[usize], max: usize) -> usize {
    let mut batches = 0;
    let mut current = 0;
    for s in row_sizes {
        current += s;
        if current >= max {
            batches += 1;
            current = 0;
        }
    }
    batches + usize::from(current > 0)
}

#[test]
fn csv_rows_are_cut_by_bytes_processed_once_each_and_gathered_in_row_order() -> TestResult {
    let ws = Workspace::new();
    // Two files: mini-batches may span both; rows keep file order.
    let row = |i: usize| format!("{i},name-{i},{}\n", i * 3);
    let a: String = std::iter::once("id,name,value\n".to_string())
        .chain((0..15).map(row))
        .collect();
    let b: String = std::iter::once("id,name,value\n".to_string())
        .chain((15..30).map(row))
        .collect();
    let a = ws.write("table/a.csv", &a);
    let b = ws.write("table/b.csv", &b);
    let calls = ws.path().join("calls.txt");
    let cfg = rows_entry(
        ws.path(),
        "rows.py",
        r#"def run(mini_batch):
    rows = rows_of(mini_batch)
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write(type(mini_batch).__name__ + " " + " ".join(str(int(r["id"])) for r in rows) + "\n")
    return ["%d %s %d" % (int(r["id"]), r["name"], int(r["value"]) * 2) for r in rows]
"#,
    )
    .usual("64")
    .environment_variable("CALLS_LOG", calls.display().to_string());
    let (run, _) = run_csv(&ws, cfg, "table", vec![a, b]);
    let r = ran(&run);
    let expected: String = (0..30)
        .map(|i| format!("{i} name-{i} {}\n", i * 6))
        .collect();
    assert_eq!(output(&run), expected);
    let sizes: Vec<usize> = (0..30).map(|i| row(i).len()).collect();
    let batches = expected_batches(&sizes, 64);
    assert!(batches > 3, "the fixture must give several mini-batches");
    assert_eq!((r.counts.items, r.counts.units), (30, batches as u64));
    let calls = lines(&calls);
    assert_eq!(calls.len(), batches);
    let mut ids: Vec<usize> = Vec::new();
    let want = if pandas_or_skip("DataFrame mini-batches (checked as lists of rows instead)") {
        "DataFrame"
    } else {
        "list"
    };
    for call in &calls {
        let mut words = call.split(' ');
        let kind = words.next().unwrap_or_default();
        assert_eq!(kind, want, "mini-batch type");
        let batch: Vec<usize> = words.map(|w| w.parse().expect("id")).collect();
        assert!(batch.len() > 1, "64 bytes hold several rows: {call}");
        ids.extend(batch);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>(), "every row exactly once");
    Ok(())
}

#[test]
fn json_lines_rows_are_gathered_in_row_order() -> TestResult {
    let ws = Workspace::new();
    let text: String = (0..20)
        .map(|i| format!("{{\"id\": {i}, \"word\": \"w{i}\"}}\n"))
        .collect();
    let file = ws.write("rows.jsonl", &text);
    let cfg = rows_entry(
        ws.path(),
        "jsonl.py",
        r#"def run(mini_batch):
    return ["%d:%s" % (int(r["id"]), r["word"]) for r in rows_of(mini_batch)]
"#,
    )
    .usual("100");
    let (run, _) = run_in(
        &ws,
        step(
            cfg,
            TabularDataset::from_json_lines_files("rows", vec![file]),
            &[],
        ),
    );
    let r = ran(&run);
    let expected: String = (0..20).map(|i| format!("{i}:w{i}\n")).collect();
    assert_eq!(output(&run), expected);
    let sizes: Vec<usize> = (0..20)
        .map(|i| format!("{{\"id\": {i}, \"word\": \"w{i}\"}}\n").len())
        .collect();
    assert_eq!(
        (r.counts.items, r.counts.units),
        (20, expected_batches(&sizes, 100) as u64)
    );
    Ok(())
}

#[test]
fn partition_keys_give_one_mini_batch_per_key_with_its_value_in_the_context() -> TestResult {
    let ws = Workspace::new();
    let regions = [
        "north", "south", "north", "east", "south", "north", "east", "east", "south", "north",
        "south", "east",
    ];
    let csv: String = std::iter::once("region,id\n".to_string())
        .chain(
            regions
                .iter()
                .enumerate()
                .map(|(i, r)| format!("{r},{i}\n")),
        )
        .collect();
    let file = ws.write("sales.csv", &csv);
    let calls = ws.path().join("calls.txt");
    let cfg = rows_entry(
        ws.path(),
        "keys.py",
        r#"def run(mini_batch, mini_batch_context):
    key = mini_batch_context.partition_key_value
    rows = rows_of(mini_batch)
    for r in rows:
        if r["region"] != key["region"]:
            raise ValueError("row %r in the mini-batch of %r" % (r, key))
    with open(os.environ["CALLS_LOG"], "a") as f:
        f.write("%s %d %s\n" % (key["region"], len(rows), sorted(key)))
    return ["%s %d" % (key["region"], int(r["id"])) for r in rows]
"#,
    )
    .partition_keys(["region"])
    .error_threshold(0)
    .process_count_per_node(2)
    .environment_variable("CALLS_LOG", calls.display().to_string());
    let (run, _) = run_csv(&ws, cfg, "sales", vec![file]);
    let r = ran(&run);
    assert_eq!((r.counts.items, r.counts.units), (12, 3));
    let mut seen = lines(&calls);
    seen.sort();
    assert_eq!(
        seen,
        [
            "east 4 ['region']",
            "north 4 ['region']",
            "south 4 ['region']"
        ]
    );
    // Mini-batches in order of each key's first appearance, rows in file order within.
    let mut expected = String::new();
    for key in ["north", "south", "east"] {
        for (i, r) in regions.iter().enumerate() {
            if *r == key {
                expected.push_str(&format!("{key} {i}\n"));
            }
        }
    }
    assert_eq!(output(&run), expected);
    Ok(())
}

#[test]
fn csv_quoted_fields_crlf_and_a_missing_final_newline_stay_whole_rows() -> TestResult {
    let ws = Workspace::new();
    // a.csv ends without a newline; b.csv uses CRLF; fields hold commas, quotes, newlines.
    let a = ws.write(
        "table/a.csv",
        "id,text\n1,plain\n2,\"with, comma\"\n3,\"multi\nline\"",
    );
    let b = ws.write(
        "table/b.csv",
        "id,text\r\n4,\"quote \"\"q\"\"\"\r\n5,last\r\n",
    );
    // One byte per mini-batch: every row is its own mini-batch, however long.
    let cfg = rows_entry(
        ws.path(),
        "quoted.py",
        r#"def run(mini_batch):
    return ["%d %s" % (int(r["id"]), r["text"].replace("\n", "\\n")) for r in rows_of(mini_batch)]
"#,
    )
    .usual("1");
    let (run, _) = run_csv(&ws, cfg, "table", vec![a, b]);
    let r = ran(&run);
    assert_eq!((r.counts.items, r.counts.units), (5, 5));
    assert_eq!(
        output(&run),
        "1 plain\n2 with, comma\n3 multi\\nline\n4 quote \"q\"\n5 last\n"
    );
    Ok(())
}

#[test]
fn dataframe_results_are_written_like_azure_and_as_csv_with_one_header() -> TestResult {
    if !pandas_or_skip("DataFrame results written like Azure and as CSV") {
        return Ok(());
    }
    for (format, expected) in [
        (
            stepgraph_steps::AppendRowFormat::Text,
            "0 a 0\n1 b 2\n2 c 4\n3 d 6\n4 e 8\n".to_string(),
        ),
        (
            stepgraph_steps::AppendRowFormat::Csv,
            "id,letter,double\n0,a,0\n1,b,2\n2,c,4\n3,d,6\n4,e,8\n".to_string(),
        ),
    ] {
        let ws = Workspace::new();
        let csv: String = std::iter::once("id,letter\n".to_string())
            .chain(
                "abcde"
                    .chars()
                    .enumerate()
                    .map(|(i, c)| format!("{i},{c}\n")),
            )
            .collect();
        let file = ws.write("letters.csv", &csv);
        let cfg = python_entry(
            ws.path(),
            "frame.py",
            r#"import pandas as pd

def run(mini_batch):
    if not isinstance(mini_batch, pd.DataFrame):
        raise TypeError("expected a DataFrame, got %s" % type(mini_batch).__name__)
    out = mini_batch.copy()
    out["double"] = out["id"] * 2
    return out
"#,
        )
        .usual("8")
        .append_row_format(format);
        let (run, _) = run_csv(&ws, cfg, "letters", vec![file]);
        let r = ran(&run);
        assert!(r.counts.units > 1, "{:?}", r.counts);
        assert_eq!(output(&run), expected, "{format:?}");
    }
    Ok(())
}
