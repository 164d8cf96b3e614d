//! Fixtures and checks shared by the partitioning tests.

// Tests use std::fs directly; the library uses fs_err (clippy.toml).
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tempfile::TempDir;

use super::jsonl::is_json_whitespace;
use super::{MiniBatchSpec, Segment, TabularFormat, TabularSource};

pub(super) fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, bytes).expect("write fixture");
    path
}

pub(super) fn csv_source(path: &Path) -> TabularSource {
    TabularSource::new(path, TabularFormat::Csv)
}

pub(super) fn jsonl_source(path: &Path) -> TabularSource {
    TabularSource::new(path, TabularFormat::JsonLines)
}

pub(super) fn tabular(
    spec: &MiniBatchSpec,
) -> (&[Segment], u64, u64, Option<&BTreeMap<String, String>>) {
    match spec {
        MiniBatchSpec::Tabular {
            segments,
            rows,
            bytes,
            partition_key_value,
            ..
        } => (segments, *rows, *bytes, partition_key_value.as_ref()),
        MiniBatchSpec::Files { .. } => panic!("expected a tabular mini-batch"),
    }
}

/// The bytes a worker would rebuild from a segment: header + ranges.
pub(super) fn segment_bytes(segment: &Segment) -> Vec<u8> {
    let data = fs::read(&segment.path).expect("read segment file");
    let mut out = data[..segment.header_end as usize].to_vec();
    for &(start, end) in &segment.ranges {
        out.extend_from_slice(&data[start as usize..end as usize]);
    }
    out
}

pub(super) fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows of a segment, parsed back from its rebuilt bytes. A JSON Lines row
/// is the object's values in key order.
pub(super) fn segment_rows(segment: &Segment) -> Vec<Vec<String>> {
    let bytes = segment_bytes(segment);
    match segment.format {
        TabularFormat::Csv => csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(bytes.as_slice())
            .records()
            .map(|r| {
                r.expect("segment parses as CSV")
                    .iter()
                    .map(str::to_string)
                    .collect()
            })
            .collect(),
        TabularFormat::JsonLines => bytes
            .split(|&b| b == b'\n')
            .filter(|line| !line.iter().all(|&b| is_json_whitespace(b)))
            .map(|line| {
                let value: serde_json::Value =
                    serde_json::from_slice(line).expect("segment line parses as JSON");
                value
                    .as_object()
                    .expect("object")
                    .values()
                    .map(json_text)
                    .collect()
            })
            .collect(),
    }
}

pub(super) fn batch_rows(spec: &MiniBatchSpec) -> Vec<Vec<String>> {
    let (segments, rows, bytes, _) = tabular(spec);
    let parsed: Vec<Vec<String>> = segments.iter().flat_map(segment_rows).collect();
    assert_eq!(parsed.len() as u64, rows, "rows field matches parsed rows");
    let range_bytes: u64 = segments
        .iter()
        .flat_map(|s| s.ranges.iter().map(|(a, b)| b - a))
        .sum();
    assert_eq!(
        range_bytes, bytes,
        "bytes field is the sum of range lengths"
    );
    parsed
}

pub(super) type KeyMap = BTreeMap<String, String>;

pub(super) fn row(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

pub(super) fn keymap(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---- property tests ---------------------------------------------------------

#[derive(Debug, Clone)]
pub(super) struct FileSpec {
    pub(super) csv: bool,
    pub(super) crlf: bool,
    pub(super) trailing_newline: bool,
    pub(super) rows: Vec<Vec<String>>,
    /// JSON Lines only: blank line inserted before row i when set.
    pub(super) blank_before: Vec<Option<&'static str>>,
}

pub(super) fn field() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!['a', 'b', 'z', ',', '"', '\n', '\r', ' ', 'é']),
        0..6,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

pub(super) fn key_field() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "a,b", "x\ny", "", "\"q\""]).prop_map(str::to_string)
}

pub(super) fn file_spec(columns: usize, key_columns: usize) -> impl Strategy<Value = FileSpec> {
    let row = (
        prop::collection::vec(key_field(), key_columns),
        prop::collection::vec(field(), columns - key_columns),
    )
        .prop_map(|(mut keys, rest)| {
            keys.extend(rest);
            keys
        });
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(
            (
                row,
                prop::option::weighted(0.2, prop::sample::select(vec!["", "  ", "\t\r"])),
            ),
            0..12,
        ),
    )
        .prop_map(|(csv, crlf, trailing_newline, rows)| {
            let (rows, blank_before) = rows.into_iter().unzip();
            FileSpec {
                csv,
                crlf,
                trailing_newline,
                rows,
                blank_before,
            }
        })
}

pub(super) fn header(columns: usize) -> Vec<String> {
    (0..columns).map(|i| format!("c{i}")).collect()
}

pub(super) fn render(spec: &FileSpec, columns: usize) -> Vec<u8> {
    let terminator: &[u8] = if spec.crlf { b"\r\n" } else { b"\n" };
    let mut out = if spec.csv {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if spec.crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(Vec::new());
        writer.write_record(header(columns)).expect("write header");
        for row in &spec.rows {
            writer.write_record(row).expect("write row");
        }
        writer.into_inner().expect("flush csv")
    } else {
        let mut out = Vec::new();
        for (row, blank) in spec.rows.iter().zip(&spec.blank_before) {
            if let Some(blank) = blank {
                out.extend_from_slice(blank.as_bytes());
                out.extend_from_slice(terminator);
            }
            let object: serde_json::Map<String, serde_json::Value> = header(columns)
                .into_iter()
                .zip(row.iter().map(|f| serde_json::Value::String(f.clone())))
                .collect();
            out.extend_from_slice(serde_json::to_string(&object).expect("json").as_bytes());
            out.extend_from_slice(terminator);
        }
        out
    };
    if !spec.trailing_newline && out.ends_with(terminator) {
        out.truncate(out.len() - terminator.len());
    }
    out
}

pub(super) fn write_specs(dir: &TempDir, specs: &[FileSpec], columns: usize) -> Vec<TabularSource> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let name = if spec.csv {
                format!("{i}.csv")
            } else {
                format!("{i}.jsonl")
            };
            let path = write(dir, &name, &render(spec, columns));
            let format = if spec.csv {
                TabularFormat::Csv
            } else {
                TabularFormat::JsonLines
            };
            TabularSource::new(path, format)
        })
        .collect()
}

/// Structural invariants of a list of mini-batches.
pub(super) fn check_structure(batches: &[MiniBatchSpec], sources: &[TabularSource]) {
    for batch in batches {
        let (segments, rows, _, _) = tabular(batch);
        assert!(rows > 0, "no empty mini-batch");
        let mut last_source = None;
        for segment in segments {
            let source = sources
                .iter()
                .position(|s| s.path == segment.path)
                .expect("segment names a source");
            assert!(
                last_source < Some(source),
                "segments in file order, once each"
            );
            last_source = Some(source);
            let len = fs::metadata(&segment.path).expect("metadata").len();
            assert!(!segment.ranges.is_empty());
            let mut previous_end = segment.header_end;
            for (i, &(start, end)) in segment.ranges.iter().enumerate() {
                assert!(start < end && end <= len);
                assert!(start >= previous_end);
                if i > 0 {
                    assert!(start > previous_end, "adjacent ranges are merged");
                }
                previous_end = end;
            }
            if segment.format == TabularFormat::JsonLines {
                assert_eq!(segment.header_end, 0);
            }
        }
    }
}
