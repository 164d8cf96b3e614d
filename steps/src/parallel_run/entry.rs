//! The in-process Rust entry: an [`EntryScript`] trait (Azure's `init` / `run` / `shutdown`),
//! one instance per worker, made by a factory; and the loading of a mini-batch's data.

use fs_err::os::unix::fs::FileExt;
use fs_err::File;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::partition::{MiniBatchSpec, Segment};
use stepgraph_engine::TabularFormat;

/// Errors an entry returns; the message is what the user sees.
pub type EntryError = Box<dyn std::error::Error + Send + Sync>;

/// One output row (a line of the gathered file in append_row mode).
pub type Row = String;

/// What an entry instance is told once, in `init`.
#[derive(Debug, Clone)]
pub struct EntryContext {
    /// The worker's name (`worker-0` ...), Azure's `agent_name`.
    pub agent_name: String,
    /// The step's output folder (summary_only entries write here).
    pub output_dir: PathBuf,
    /// A scratch folder.
    pub working_dir: PathBuf,
    /// Side input name -> path.
    pub side_inputs: BTreeMap<String, PathBuf>,
    /// The step's resolved arguments.
    pub arguments: Vec<String>,
}

/// The items of one mini-batch.
#[derive(Debug, Clone, PartialEq)]
pub enum MiniBatchData {
    /// File paths (FileDataset).
    Files(Vec<PathBuf>),
    /// CSV rows and their header.
    Csv {
        /// Column names.
        header: csv::StringRecord,
        /// Rows.
        records: Vec<csv::StringRecord>,
    },
    /// JSON Lines rows.
    JsonLines(Vec<serde_json::Value>),
}

/// A mini-batch handed to [`EntryScript::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct MiniBatch {
    /// Its index (deterministic: the same on every run).
    pub index: u64,
    /// Its items.
    pub data: MiniBatchData,
    /// With partition_keys: the key columns' values.
    pub partition_key_value: Option<BTreeMap<String, String>>,
}

impl MiniBatch {
    /// Number of items (files or rows).
    pub fn len(&self) -> usize {
        match &self.data {
            MiniBatchData::Files(f) => f.len(),
            MiniBatchData::Csv { records, .. } => records.len(),
            MiniBatchData::JsonLines(v) => v.len(),
        }
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Azure's entry-script contract in Rust. `run` returns one row per successful item; returning
/// fewer rows than items counts the difference as failed items.
pub trait EntryScript: Send {
    /// Called once per worker before any mini-batch.
    ///
    /// # Errors
    /// An error fails the worker (after retries, the step).
    fn init(&mut self, ctx: &EntryContext) -> Result<(), EntryError> {
        let _ = ctx;
        Ok(())
    }

    /// Process one mini-batch.
    ///
    /// # Errors
    /// An error fails this try of the mini-batch.
    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<Row>, EntryError>;

    /// Called once per worker after the last mini-batch.
    ///
    /// # Errors
    /// Reported in the logs, not fatal.
    fn shutdown(&mut self) -> Result<(), EntryError> {
        Ok(())
    }
}

/// Makes one [`EntryScript`] per worker.
pub type EntryFactory = Arc<dyn Fn() -> Box<dyn EntryScript> + Send + Sync>;

/// Why the data of a mini-batch could not be read; every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LoadError {
    /// The file could not be read (`fs_err`'s message names it).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A JSON line that does not parse.
    #[error("{}: line {line} of mini-batch {index}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The line's number in the mini-batch's data from this file (1-based).
        line: usize,
        /// The mini-batch.
        index: u64,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// CSV that does not parse.
    #[error("{}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: csv::Error,
    },
}

/// Read the data of a mini-batch (files are passed as paths; rows are read from their byte
/// ranges, so memory holds one mini-batch, never the dataset).
///
/// # Errors
/// An error naming the file when it cannot be read or parsed.
pub(crate) fn load(index: u64, spec: &MiniBatchSpec) -> Result<MiniBatch, LoadError> {
    match spec {
        MiniBatchSpec::Files {
            files,
            partition_key_value,
            ..
        } => Ok(MiniBatch {
            index,
            data: MiniBatchData::Files(files.clone()),
            partition_key_value: partition_key_value.clone(),
        }),
        MiniBatchSpec::Tabular {
            segments,
            partition_key_value,
            ..
        } => {
            let data = match segments.first().map(|s| s.format) {
                Some(TabularFormat::JsonLines) => {
                    let mut rows = Vec::new();
                    for seg in segments {
                        let bytes = read_ranges(seg)?;
                        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
                            if line.iter().all(u8::is_ascii_whitespace) {
                                continue;
                            }
                            let v =
                                serde_json::from_slice(line).map_err(|source| LoadError::Json {
                                    path: seg.path.clone(),
                                    line: i + 1,
                                    index,
                                    source,
                                })?;
                            rows.push(v);
                        }
                    }
                    MiniBatchData::JsonLines(rows)
                }
                _ => {
                    let mut header = csv::StringRecord::new();
                    let mut records = Vec::new();
                    for seg in segments {
                        let mut buf = read_at(seg, 0, seg.header_end)?;
                        buf.extend_from_slice(&read_ranges(seg)?);
                        let mut rdr = csv::ReaderBuilder::new()
                            .has_headers(true)
                            .from_reader(buf.as_slice());
                        let csv_err = |source| LoadError::Csv {
                            path: seg.path.clone(),
                            source,
                        };
                        header = rdr.headers().map_err(csv_err)?.clone();
                        for r in rdr.records() {
                            records.push(r.map_err(csv_err)?);
                        }
                    }
                    MiniBatchData::Csv { header, records }
                }
            };
            Ok(MiniBatch {
                index,
                data,
                partition_key_value: partition_key_value.clone(),
            })
        }
    }
}

fn read_at(seg: &Segment, start: u64, end: u64) -> Result<Vec<u8>, LoadError> {
    let f = File::open(&seg.path)?;
    let mut buf = vec![0u8; end.saturating_sub(start) as usize];
    f.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

fn read_ranges(seg: &Segment) -> Result<Vec<u8>, LoadError> {
    let f = File::open(&seg.path)?;
    let total: u64 = seg.ranges.iter().map(|(s, e)| e - s).sum();
    let mut buf = Vec::with_capacity(total as usize + seg.ranges.len());
    for (s, e) in &seg.ranges {
        let at = buf.len();
        buf.resize(at + (e - s) as usize, 0);
        f.read_exact_at(&mut buf[at..], *s)?;
        // A last line without its newline must not run into the next range.
        if buf.last().is_some_and(|b| *b != b'\n') {
            buf.push(b'\n');
        }
    }
    Ok(buf)
}
