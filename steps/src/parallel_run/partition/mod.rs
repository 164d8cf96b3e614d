//! Deterministic, streaming partitioning of ParallelRunStep inputs into mini-batches.
//!
//! This re-creates how Azure ML's `ParallelRunStep` splits its inputs:
//!
//! * a **FileDataset** is cut into mini-batches of `mini_batch_size` files
//!   ([`partition_files`]);
//! * a **TabularDataset** is cut into mini-batches of approximately
//!   `mini_batch_size` bytes of whole records ([`partition_tabular`]), or, when
//!   `partition_keys` are given, into one mini-batch per distinct combination of
//!   the key columns' values ([`partition_by_keys`]).
//!
//! Mini-batches are described by *offsets* into the input files, never by loaded
//! data: a [`Segment`] names a file, the byte length of its CSV header and the
//! byte ranges of the whole records that belong to the mini-batch. Scanning is
//! streaming (fixed-size buffers, one record at a time), so partitioning a file
//! far larger than memory needs memory proportional to the number of
//! mini-batches (and, for [`partition_by_keys`], to the number of distinct keys
//! and ranges), never to the size of the data.
//!
//! Partitioning is deterministic: given the same files (and the same order of
//! sources), mini-batch `i` is identical on every run.
//!
//! A worker rebuilds a mini-batch's data from a segment by reading the bytes
//! `[0, header_end)` of the file (the CSV header record; nothing for JSON Lines)
//! followed by the bytes of each range in order; the result is a valid CSV /
//! JSON Lines document holding exactly the segment's rows.
//!
//! Throughput and memory figures (1 GiB CSV and JSON Lines inputs) are in `bench/README.md`
//! (section 6, "Partitioning alone").

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub mod cdc;
mod csv;
pub mod format;
mod jsonl;
mod keys;
#[cfg(test)]
mod test_support;

use self::csv::CsvScanner;
pub use format::{FormatError, PartitionFormat, PartitionValues};
use jsonl::scan_jsonl_lines;
pub use keys::partition_by_keys;

/// Size of the read buffers used when scanning input files.
const IO_BUFFER_BYTES: usize = 256 * 1024;

/// The UTF-8 byte order mark, ignored before the first JSON Lines record.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

// Format of a tabular input file: the engine's one `TabularFormat`. CSV has a header record
// (RFC 4180 quoting; LF, CRLF or CR line terminators); JSON Lines is one JSON object per
// non-blank line.
use stepgraph_engine::TabularFormat;

/// One tabular input file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TabularSource {
    /// Path of the file.
    pub path: PathBuf,
    /// Format of the file.
    pub format: TabularFormat,
}

impl TabularSource {
    /// A source for the file at `path` in the given format.
    pub fn new(path: impl Into<PathBuf>, format: TabularFormat) -> Self {
        Self {
            path: path.into(),
            format,
        }
    }
}

/// The rows of one file that belong to a mini-batch, as byte ranges of whole
/// records.
///
/// A worker rebuilds the rows as the bytes `[0, header_end)` followed by the
/// bytes of every range, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Path of the file.
    pub path: PathBuf,
    /// Format of the file.
    pub format: TabularFormat,
    /// CSV: bytes `[0, header_end)` are the header record including its line
    /// terminator (and any blank lines around it). JSON Lines: 0.
    pub header_end: u64,
    /// Byte ranges `[start, end)` of whole records, ascending and
    /// non-overlapping; adjacent ranges are merged. A CSV record's range
    /// includes its line terminator and any blank lines that follow it; a JSON
    /// Lines range covers exactly non-blank lines including their terminators.
    pub ranges: Vec<(u64, u64)>,
}

/// One mini-batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MiniBatchSpec {
    /// A mini-batch of a FileDataset.
    Files {
        /// The files of the mini-batch, in input order.
        files: Vec<PathBuf>,
        /// With `partition_keys`: the values shared by every file of the mini-batch.
        partition_key_value: Option<BTreeMap<String, String>>,
        /// With a `partition_format`: each file's partition values, one per file (empty
        /// without a format).
        partitions: Vec<PartitionValues>,
    },
    /// A mini-batch of a TabularDataset.
    Tabular {
        /// The rows of the mini-batch, one segment per file, in input order.
        segments: Vec<Segment>,
        /// Number of records (rows) in the mini-batch.
        rows: u64,
        /// Total size of the mini-batch's records (sum of the range lengths).
        bytes: u64,
        /// For [`partition_by_keys`]: the key column values shared by every row
        /// of the mini-batch; `None` for [`partition_tabular`].
        partition_key_value: Option<BTreeMap<String, String>>,
        /// With a `partition_format`: each segment's file's partition values, one per
        /// segment (empty without a format).
        partitions: Vec<PartitionValues>,
    },
}

impl MiniBatchSpec {
    /// Number of items in the mini-batch: files for a file mini-batch, rows for
    /// a tabular one.
    pub fn item_count(&self) -> u64 {
        match self {
            MiniBatchSpec::Files { files, .. } => files.len() as u64,
            MiniBatchSpec::Tabular { rows, .. } => *rows,
        }
    }
}

/// Errors of tabular partitioning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// A file could not be opened or read (the `fs_err` error names it, so the path is not
    /// repeated).
    #[error("{source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A CSV file is malformed (e.g. a record with a different number of
    /// fields than the header) or a key value is not UTF-8.
    #[error("{}: CSV record {record} (byte offset {byte}): {message}", .path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// Index of the record in the file; the header is record 0, so the
        /// first data row is record 1.
        record: u64,
        /// Byte offset in the file at which the record starts.
        byte: u64,
        /// What is wrong.
        message: String,
    },
    /// A JSON Lines record is not a valid JSON object.
    #[error("{}: line {line}: {message}", .path.display())]
    JsonLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number in the file (blank lines included).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A partition key column is missing from a CSV header or a JSON Lines
    /// record.
    #[error("{}: partition key column {column:?} not found{}", .path.display(),
        .line.map(|l| format!(" in the record on line {l}")).unwrap_or_else(|| " in the CSV header".to_string()))]
    MissingKeyColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// JSON Lines: the 1-based line of the record lacking the key. CSV:
        /// `None` (the column is missing from the header).
        line: Option<u64>,
    },
}

fn io_error(path: &Path, source: io::Error) -> PartitionError {
    PartitionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Splits `files` (already sorted by the caller) into consecutive chunks of
/// `per_batch` files, preserving order; the last chunk may be smaller.
///
/// A `per_batch` of 0 is treated as 1. No files gives no mini-batches.
pub fn partition_files(files: &[PathBuf], per_batch: u64) -> Vec<MiniBatchSpec> {
    let per_batch = usize::try_from(per_batch.max(1)).unwrap_or(usize::MAX);
    files
        .chunks(per_batch)
        .map(|chunk| MiniBatchSpec::Files {
            files: chunk.to_vec(),
            partition_key_value: None,
            partitions: Vec::new(),
        })
        .collect()
}

/// Splits tabular files into mini-batches of about `max_bytes` bytes.
///
/// Records are taken in file order, files in the given order. A mini-batch
/// accumulates whole records until its byte total (each record's size in the
/// file, including its line terminator) reaches at least `max_bytes`, then it is
/// cut; a record is never split, so a single record of `max_bytes` or more
/// forms its own mini-batch (a `max_bytes` of 0 puts every record in its own
/// mini-batch). A mini-batch may span several files, with one segment per file.
/// The last mini-batch holds the remainder.
///
/// CSV files start with a header record, which belongs to no mini-batch; a
/// header-only or empty file contributes nothing. A CSV record with a different
/// number of fields than the header is an error. JSON Lines records are the
/// non-blank lines (lines of only spaces, tabs and CR are skipped); they are
/// not parsed here. No sources, or only empty files, give `Ok(vec![])`.
pub fn partition_tabular(
    sources: &[TabularSource],
    max_bytes: u64,
) -> Result<Vec<MiniBatchSpec>, PartitionError> {
    partition_tabular_with(sources, max_bytes, IO_BUFFER_BYTES)
}

/// [`partition_tabular`] with a given read buffer size (tests use tiny buffers
/// to exercise records and terminators that straddle buffer refills).
fn partition_tabular_with(
    sources: &[TabularSource],
    max_bytes: u64,
    buffer_bytes: usize,
) -> Result<Vec<MiniBatchSpec>, PartitionError> {
    let mut batches = Vec::new();
    let mut current = BatchBuilder::default();
    for (file_index, source) in sources.iter().enumerate() {
        let mut add = |header_end: u64, range: (u64, u64)| {
            current.push(file_index, source, header_end, range);
            if current.bytes >= max_bytes {
                batches.push(std::mem::take(&mut current).into_spec(None));
            }
        };
        match source.format {
            TabularFormat::Csv => {
                let mut scanner = CsvScanner::open(&source.path, &[], buffer_bytes)?;
                while let Some(range) = scanner.next_record()? {
                    add(scanner.header_end, range);
                }
            }
            TabularFormat::JsonLines => {
                scan_jsonl_lines(&source.path, buffer_bytes, |range| add(0, range))?
            }
        }
    }
    if current.rows > 0 {
        batches.push(current.into_spec(None));
    }
    Ok(batches)
}

/// Accumulates the segments of one tabular mini-batch.
#[derive(Debug, Default)]
struct BatchBuilder {
    segments: Vec<Segment>,
    /// Index (in the sources list) of the file of the last segment.
    last_file: Option<usize>,
    rows: u64,
    bytes: u64,
}

impl BatchBuilder {
    fn push(
        &mut self,
        file_index: usize,
        source: &TabularSource,
        header_end: u64,
        (start, end): (u64, u64),
    ) {
        if self.last_file != Some(file_index) || self.segments.is_empty() {
            self.segments.push(Segment {
                path: source.path.clone(),
                format: source.format,
                header_end,
                ranges: Vec::new(),
            });
            self.last_file = Some(file_index);
        }
        if let Some(segment) = self.segments.last_mut() {
            match segment.ranges.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => segment.ranges.push((start, end)),
            }
        }
        self.rows += 1;
        self.bytes += end.saturating_sub(start);
    }

    fn into_spec(self, partition_key_value: Option<BTreeMap<String, String>>) -> MiniBatchSpec {
        MiniBatchSpec::Tabular {
            segments: self.segments,
            rows: self.rows,
            bytes: self.bytes,
            partition_key_value,
            partitions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jsonl::is_json_whitespace;
    use super::test_support::*;
    use super::*;
    use fs_err as fs;
    use proptest::prelude::*;
    use tempfile::TempDir;

    // ---- files -----------------------------------------------------------------

    #[test]
    fn files_are_chunked_in_order() {
        let files: Vec<PathBuf> = (0..5).map(|i| PathBuf::from(format!("f{i}"))).collect();
        let batches = partition_files(&files, 2);
        let expected: Vec<MiniBatchSpec> = [&files[0..2], &files[2..4], &files[4..5]]
            .iter()
            .map(|c| MiniBatchSpec::Files {
                files: c.to_vec(),
                partition_key_value: None,
                partitions: Vec::new(),
            })
            .collect();
        assert_eq!(batches, expected);
        assert_eq!(
            batches
                .iter()
                .map(MiniBatchSpec::item_count)
                .collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        assert_eq!(partition_files(&files, 10).len(), 1);
        assert_eq!(partition_files(&files, 0).len(), 5, "0 is treated as 1");
        assert!(partition_files(&[], 3).is_empty());
    }

    #[test]
    fn empty_inputs_give_no_batches() {
        let dir = TempDir::new().expect("tempdir");
        let header_only = write(&dir, "h.csv", b"a,b\n");
        let header_only_crlf = write(&dir, "h2.csv", b"a,b\r\n\r\n");
        let empty_csv = write(&dir, "e.csv", b"");
        let empty_jsonl = write(&dir, "e.jsonl", b"");
        let blank_jsonl = write(&dir, "b.jsonl", b"\n  \n\r\n\t");
        let sources = [
            csv_source(&header_only),
            csv_source(&header_only_crlf),
            csv_source(&empty_csv),
            jsonl_source(&empty_jsonl),
            jsonl_source(&blank_jsonl),
        ];
        assert_eq!(partition_tabular(&sources, 10).expect("partition"), vec![]);
        assert_eq!(partition_tabular(&[], 10).expect("partition"), vec![]);
        let keys = vec!["a".to_string()];
        assert_eq!(
            partition_by_keys(&sources[..3], &keys).expect("by keys"),
            vec![]
        );
    }

    #[test]
    fn batches_span_files_with_one_segment_per_file() {
        let dir = TempDir::new().expect("tempdir");
        // Every data row is 4 bytes.
        let f1 = write(&dir, "1.csv", b"col\nr11\nr12\nr13\n");
        let f2 = write(&dir, "2.jsonl", b"{\"col\":\"r21\"}\n{\"col\":\"r22\"}\n");
        let f3 = write(&dir, "3.csv", b"column\r\nr31\r\n");
        let sources = [csv_source(&f1), jsonl_source(&f2), csv_source(&f3)];
        let batches = partition_tabular(&sources, 20).expect("partition");
        let expected = vec![
            MiniBatchSpec::Tabular {
                segments: vec![
                    Segment {
                        path: f1.clone(),
                        format: TabularFormat::Csv,
                        header_end: 4,
                        ranges: vec![(4, 16)],
                    },
                    Segment {
                        path: f2.clone(),
                        format: TabularFormat::JsonLines,
                        header_end: 0,
                        ranges: vec![(0, 14)],
                    },
                ],
                rows: 4,
                bytes: 26,
                partition_key_value: None,
                partitions: Vec::new(),
            },
            MiniBatchSpec::Tabular {
                segments: vec![
                    Segment {
                        path: f2.clone(),
                        format: TabularFormat::JsonLines,
                        header_end: 0,
                        ranges: vec![(14, 28)],
                    },
                    Segment {
                        path: f3.clone(),
                        format: TabularFormat::Csv,
                        header_end: 8,
                        ranges: vec![(8, 13)],
                    },
                ],
                rows: 2,
                bytes: 19,
                partition_key_value: None,
                partitions: Vec::new(),
            },
        ];
        assert_eq!(batches, expected);
        let all: Vec<Vec<String>> = batches.iter().flat_map(batch_rows).collect();
        let names = ["r11", "r12", "r13", "r21", "r22", "r31"];
        assert_eq!(all, names.iter().map(|n| row(&[n])).collect::<Vec<_>>());
    }

    #[test]
    fn oversize_record_forms_its_own_batch() {
        let dir = TempDir::new().expect("tempdir");
        let big = "x".repeat(500);
        let data = format!("a\n1\n2\n{big}\n3\n4\n");
        let path = write(&dir, "big.csv", data.as_bytes());
        let batches = partition_tabular(&[csv_source(&path)], 5).expect("partition");
        let rows: Vec<Vec<Vec<String>>> = batches.iter().map(batch_rows).collect();
        assert_eq!(
            rows,
            vec![
                vec![row(&["1"]), row(&["2"]), row(&[&big])],
                vec![row(&["3"]), row(&["4"])],
            ]
        );
        let batches = partition_tabular(&[csv_source(&path)], 4).expect("partition");
        let counts: Vec<u64> = batches.iter().map(MiniBatchSpec::item_count).collect();
        assert_eq!(counts, vec![2, 1, 2]);
        assert_eq!(tabular(&batches[1]).2, 501);
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_file() {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("nope.csv");
        for source in [csv_source(&path), jsonl_source(&path)] {
            match partition_tabular(std::slice::from_ref(&source), 10) {
                Err(e @ PartitionError::Io { .. }) => {
                    // Named once: the fs_err error names it, the message does not repeat it.
                    assert_eq!(e.to_string().matches("nope.csv").count(), 1, "{e}");
                    assert!(std::error::Error::source(&e).is_some(), "{e}");
                }
                other => panic!("expected an I/O error, got {other:?}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        #[test]
        fn tabular_rows_appear_once_in_order(
            (columns, specs) in (1usize..=3)
                .prop_flat_map(|c| (Just(c), prop::collection::vec(file_spec(c, 0), 1..=3))),
            max_bytes in 1u64..300,
            buffer_bytes in prop::sample::select(vec![1usize, 2, 3, 5, 16, 64]),
        ) {
            let dir = TempDir::new().expect("tempdir");
            let sources = write_specs(&dir, &specs, columns);
            let batches = partition_tabular(&sources, max_bytes).expect("partition");
            let again = partition_tabular(&sources, max_bytes).expect("partition");
            prop_assert_eq!(&batches, &again);
            // Tiny buffers (records straddling refills) give the same result.
            let small = partition_tabular_with(&sources, max_bytes, buffer_bytes)
                .expect("partition");
            prop_assert_eq!(&batches, &small);
            check_structure(&batches, &sources);

            let expected: Vec<Vec<String>> =
                specs.iter().flat_map(|s| s.rows.iter().cloned()).collect();
            let actual: Vec<Vec<String>> = batches.iter().flat_map(batch_rows).collect();
            prop_assert_eq!(actual, expected);

            // The cut rule, against per-record sizes from a 1-record-per-batch run.
            let singles = partition_tabular(&sources, 0).expect("partition");
            prop_assert!(singles.iter().all(|b| b.item_count() == 1));
            let mut expected_shape = Vec::new();
            let (mut rows, mut bytes) = (0u64, 0u64);
            for single in &singles {
                rows += 1;
                bytes += tabular(single).2;
                if bytes >= max_bytes {
                    expected_shape.push((rows, bytes));
                    (rows, bytes) = (0, 0);
                }
            }
            if rows > 0 {
                expected_shape.push((rows, bytes));
            }
            let shape: Vec<(u64, u64)> =
                batches.iter().map(|b| (tabular(b).1, tabular(b).2)).collect();
            prop_assert_eq!(shape, expected_shape);

            // CSV records tile the file after the header; JSON Lines ranges are
            // whole non-blank lines and only blank lines are left out.
            for source in &sources {
                let data = fs::read(&source.path).expect("read");
                let records: Vec<(u64, u64, u64)> = singles
                    .iter()
                    .map(|b| &tabular(b).0[0])
                    .filter(|s| s.path == source.path)
                    .map(|s| (s.header_end, s.ranges[0].0, s.ranges[0].1))
                    .collect();
                let mut cursor = records.first().map_or(0, |r| r.0);
                for &(_, start, end) in &records {
                    let gap = &data[cursor as usize..start as usize];
                    if source.format == TabularFormat::Csv {
                        prop_assert!(gap.is_empty());
                        prop_assert!(!matches!(data[start as usize], b'\r' | b'\n'));
                    } else {
                        prop_assert!(gap.iter().all(|&b| is_json_whitespace(b)));
                        prop_assert!(start == 0 || data[start as usize - 1] == b'\n');
                    }
                    prop_assert!(end as usize == data.len() || data[end as usize - 1] == b'\n');
                    cursor = end;
                }
                if source.format == TabularFormat::Csv && !records.is_empty() {
                    prop_assert_eq!(cursor as usize, data.len());
                }
            }
        }
    }
}
