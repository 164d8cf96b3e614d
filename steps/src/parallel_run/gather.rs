//! Gathering append_row output in mini-batch order while mini-batches finish, so little is
//! left to do after the last one. A result that is next in order is written from memory;
//! one that finishes early waits as a log position and is read back when its turn comes, so
//! memory stays bounded however long an earlier mini-batch takes.

use fs_err::File;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::Value;
use stepgraph_engine::StepError;

use super::config::AppendRowFormat;
use super::results::{Results, Stored};

/// What one mini-batch contributes to the gathered file.
pub(crate) enum Piece {
    /// Rows of a mini-batch that finished in this run, and where they are kept.
    Rows {
        rows: Vec<u8>,
        columns: Option<Vec<String>>,
        rec: Stored,
    },
    /// Rows kept in the progress log or the unit memo (committed earlier, reused, or
    /// finished out of order).
    Committed(Stored),
    /// A mini-batch that failed after all its tries: no rows.
    Nothing,
}

/// Writes pieces in index order as soon as every earlier index is known.
pub(crate) struct Gatherer {
    out: BufWriter<File>,
    format: AppendRowFormat,
    next: u64,
    waiting: BTreeMap<u64, Piece>,
    written_any: bool,
}

impl Gatherer {
    /// Start (or restart) the gathered file at `path`.
    pub(crate) fn create(path: &Path, format: AppendRowFormat) -> std::io::Result<Gatherer> {
        Ok(Gatherer {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            format,
            next: 0,
            waiting: BTreeMap::new(),
            written_any: false,
        })
    }

    /// Add mini-batch `index`'s piece and write every piece that is now in order.
    pub(crate) fn add(
        &mut self,
        index: u64,
        piece: Piece,
        log: &Results<'_>,
    ) -> Result<(), StepError> {
        if index != self.next {
            let piece = match piece {
                Piece::Rows { rec, .. } => Piece::Committed(rec),
                other => other,
            };
            self.waiting.insert(index, piece);
            return Ok(());
        }
        self.write(piece, log)?;
        self.next += 1;
        while let Some(piece) = self.waiting.remove(&self.next) {
            self.write(piece, log)?;
            self.next += 1;
        }
        Ok(())
    }

    fn write(&mut self, piece: Piece, log: &Results<'_>) -> Result<(), StepError> {
        let (bytes, columns) = match piece {
            Piece::Nothing => return Ok(()),
            Piece::Rows { rows, columns, .. } => (rows, columns),
            Piece::Committed(rec) => {
                let columns = rec
                    .meta()
                    .get("columns")
                    .and_then(Value::as_array)
                    .map(|c| {
                        c.iter()
                            .map(|v| v.as_str().unwrap_or_default().to_string())
                            .collect()
                    });
                (log.read(&rec)?, columns)
            }
        };
        // CSV: one header line, from the first piece that names its columns, if it comes
        // before any row.
        if self.format == AppendRowFormat::Csv && !self.written_any {
            if let Some(cols) = columns {
                let mut w = csv::Writer::from_writer(Vec::new());
                w.write_record(&cols)
                    .map_err(|e| StepError::with_source("", e))?;
                let header = w.into_inner().map_err(|e| StepError::new(e.to_string()))?;
                self.out.write_all(&header)?;
                self.written_any = true;
            }
        }
        if !bytes.is_empty() {
            self.out.write_all(&bytes)?;
            self.written_any = true;
        }
        Ok(())
    }

    /// Flush; every one of `total` mini-batches must have been added.
    pub(crate) fn finish(mut self, total: u64) -> Result<(), StepError> {
        if self.next != total {
            return Err(StepError::new(format!(
                "gathered {} of {total} mini-batches (mini-batch {} never finished)",
                self.next, self.next
            )));
        }
        // No fsync here: the engine fsyncs the file when it becomes an object.
        Ok(self.out.flush()?)
    }
}
