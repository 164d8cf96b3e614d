//! The CSV side of partitioning: a streaming scan of whole records (RFC 4180 quoting; LF, CRLF
//! or CR terminators) that reports each record's byte range and, for key grouping, its key
//! fields.

use fs_err::File;
use std::io::{self, Read};
use std::path::Path;

use super::{io_error, PartitionError};

/// The `Read` given to the csv reader: it keeps a copy of the chunk most
/// recently handed out, so that a record boundary reported by csv can be moved
/// past the line-terminator bytes csv leaves at the start of the next record.
///
/// csv reports a record as starting where the previous one stopped, which is
/// *before* the `\n` of a CRLF terminator and before any blank lines. Cutting
/// there would put a `\r` at the end of one mini-batch and the `\n` at the
/// start of the next. A record never starts with `\r` or `\n` (csv skips blank
/// lines), so the true start is the probe position plus the run of `\r`/`\n`
/// bytes found there. The probe is set right after a record is read (when the
/// position lies inside the current chunk) and, if the run reaches the end of
/// the chunk, finished on the following reads.
struct ProbeReader<R> {
    inner: R,
    chunk: Vec<u8>,
    /// File offset of `chunk[0]`.
    chunk_start: u64,
    probe: Probe,
}

#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    at: u64,
    run: u64,
    resolved: bool,
}

impl<R: Read> ProbeReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            chunk: Vec::new(),
            chunk_start: 0,
            probe: Probe {
                resolved: true,
                ..Probe::default()
            },
        }
    }

    /// Starts measuring the run of line-terminator bytes at file offset `at`.
    fn set_probe(&mut self, at: u64) {
        self.probe = Probe {
            at,
            run: 0,
            resolved: false,
        };
        let offset = at
            .checked_sub(self.chunk_start)
            .and_then(|offset| usize::try_from(offset).ok())
            .filter(|&offset| offset <= self.chunk.len());
        match offset {
            Some(offset) => self.scan_probe(offset),
            // The bytes are no longer visible (cannot happen with csv's
            // buffering): keep the boundary where csv put it, which is still a
            // valid (if less tidy) record boundary.
            None => self.probe.resolved = true,
        }
    }

    fn scan_probe(&mut self, from: usize) {
        let tail = self.chunk.get(from..).unwrap_or_default();
        match tail.iter().position(|&b| b != b'\r' && b != b'\n') {
            Some(run) => {
                self.probe.run += run as u64;
                self.probe.resolved = true;
            }
            None => self.probe.run += tail.len() as u64,
        }
    }

    /// The adjusted boundary: the probe position plus its terminator run.
    fn probe_end(&self) -> u64 {
        self.probe.at + self.probe.run
    }
}

impl<R: Read> Read for ProbeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Ok(n) => break n.min(buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.chunk_start += self.chunk.len() as u64;
        self.chunk.clear();
        self.chunk.extend_from_slice(&buf[..n]);
        if !self.probe.resolved {
            if n == 0 {
                self.probe.resolved = true;
            } else {
                self.scan_probe(0);
            }
        }
        Ok(n)
    }
}

/// Streams the records of one CSV file as byte ranges, one record behind the
/// csv reader (a record's end is the next record's start).
pub(super) struct CsvScanner<'a> {
    path: &'a Path,
    reader: csv::Reader<ProbeReader<File>>,
    record: csv::ByteRecord,
    /// Column index of each key, in key order.
    key_columns: Vec<usize>,
    key_names: &'a [String],
    /// Bytes `[0, header_end)` are the header; final once a record was read.
    pub(super) header_end: u64,
    /// Number of data records read so far.
    records_read: u64,
    /// Adjusted start of the record read but not yet returned.
    lookahead: Option<u64>,
    lookahead_keys: Vec<String>,
    /// Key values of the record last returned by `next_record`.
    pub(super) keys: Vec<String>,
    scratch_keys: Vec<String>,
}

impl<'a> CsvScanner<'a> {
    pub(super) fn open(
        path: &'a Path,
        key_names: &'a [String],
        buffer_bytes: usize,
    ) -> Result<Self, PartitionError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .buffer_capacity(buffer_bytes.max(1))
            .from_reader(ProbeReader::new(file));
        let start = reader.position().clone();
        let headers = reader
            .byte_headers()
            .map_err(|e| csv_error(path, e, &start))?;
        let mut key_columns = Vec::with_capacity(key_names.len());
        // A file without even a header has no rows; its columns don't matter.
        if !headers.is_empty() {
            for name in key_names {
                match headers.iter().position(|h| h == name.as_bytes()) {
                    Some(column) => key_columns.push(column),
                    None => {
                        return Err(PartitionError::MissingKeyColumn {
                            path: path.to_path_buf(),
                            column: name.clone(),
                            line: None,
                        })
                    }
                }
            }
        }
        let header_end = reader.position().byte();
        reader.get_mut().set_probe(header_end);
        let empty_keys = vec![String::new(); key_columns.len()];
        Ok(Self {
            path,
            reader,
            record: csv::ByteRecord::new(),
            key_columns,
            key_names,
            header_end,
            records_read: 0,
            lookahead: None,
            lookahead_keys: empty_keys.clone(),
            keys: empty_keys.clone(),
            scratch_keys: empty_keys,
        })
    }

    /// The next record's byte range; its key values are then in `self.keys`.
    pub(super) fn next_record(&mut self) -> Result<Option<(u64, u64)>, PartitionError> {
        loop {
            let before = self.reader.position().clone();
            match self.reader.read_byte_record(&mut self.record) {
                Ok(true) => {
                    let start = self.reader.get_ref().probe_end();
                    if self.records_read == 0 {
                        self.header_end = start;
                    }
                    self.records_read += 1;
                    self.extract_keys(start)?;
                    let next = self.reader.position().byte();
                    self.reader.get_mut().set_probe(next);
                    // lookahead_keys <- this record's keys,
                    // scratch_keys <- the previous lookahead record's keys.
                    std::mem::swap(&mut self.lookahead_keys, &mut self.scratch_keys);
                    if let Some(previous) = self.lookahead.replace(start) {
                        std::mem::swap(&mut self.keys, &mut self.scratch_keys);
                        return Ok(Some((previous, start)));
                    }
                }
                Ok(false) => {
                    let end = self.reader.position().byte();
                    return Ok(self.lookahead.take().map(|start| {
                        std::mem::swap(&mut self.keys, &mut self.lookahead_keys);
                        (start, end)
                    }));
                }
                Err(e) => return Err(csv_error(self.path, e, &before)),
            }
        }
    }

    /// Copies the key fields of `self.record` into `self.scratch_keys`.
    fn extract_keys(&mut self, start: u64) -> Result<(), PartitionError> {
        for ((slot, &column), name) in self
            .scratch_keys
            .iter_mut()
            .zip(&self.key_columns)
            .zip(self.key_names)
        {
            let text = self
                .record
                .get(column)
                .and_then(|field| std::str::from_utf8(field).ok())
                .ok_or_else(|| PartitionError::Csv {
                    path: self.path.to_path_buf(),
                    record: self.records_read,
                    byte: start,
                    message: format!("value of partition key column {name:?} is not valid UTF-8"),
                })?;
            slot.clear();
            slot.push_str(text);
        }
        Ok(())
    }
}

fn csv_error(path: &Path, err: csv::Error, fallback: &csv::Position) -> PartitionError {
    let message = err.to_string();
    let position = err.position().cloned().unwrap_or_else(|| fallback.clone());
    match err.into_kind() {
        csv::ErrorKind::Io(source) => io_error(path, source),
        _ => PartitionError::Csv {
            path: path.to_path_buf(),
            record: position.record(),
            byte: position.byte(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use tempfile::TempDir;

    #[test]
    fn csv_quoted_comma_and_newline_rebuild_exactly() {
        let dir = TempDir::new().expect("tempdir");
        let data = b"id,text\n1,\"a,b\"\n2,\"line1\nline2\"\n3,\"say \"\"hi\"\"\"\n4,plain\n";
        let path = write(&dir, "q.csv", data);
        let batches = partition_tabular(&[csv_source(&path)], 12).expect("partition");
        let all: Vec<Vec<String>> = batches.iter().flat_map(batch_rows).collect();
        assert_eq!(
            all,
            vec![
                row(&["1", "a,b"]),
                row(&["2", "line1\nline2"]),
                row(&["3", "say \"hi\""]),
                row(&["4", "plain"]),
            ]
        );
        // Row sizes are 8, 16, 15, 8: cut at >= 12 bytes.
        let shapes: Vec<(u64, u64)> = batches
            .iter()
            .map(|b| (tabular(b).1, tabular(b).2))
            .collect();
        assert_eq!(shapes, vec![(2, 24), (1, 15), (1, 8)]);
        let (segments, ..) = tabular(&batches[0]);
        assert_eq!(segments[0].header_end, 8);
        assert_eq!(segments[0].ranges, vec![(8, 32)]);
    }

    #[test]
    fn csv_crlf_boundaries_include_the_whole_terminator() {
        let dir = TempDir::new().expect("tempdir");
        let data = b"a,b\r\n1,2\r\n\r\n33,4\r\n5,\"x\r\ny\"\r\n";
        let path = write(&dir, "crlf.csv", data);
        let batches = partition_tabular(&[csv_source(&path)], 1).expect("partition");
        let ranges: Vec<Vec<(u64, u64)>> = batches
            .iter()
            .map(|b| tabular(b).0[0].ranges.clone())
            .collect();
        // "1,2\r\n\r\n" (blank line kept with the record before it), "33,4\r\n", ...
        assert_eq!(ranges, vec![vec![(5, 12)], vec![(12, 18)], vec![(18, 28)]]);
        assert_eq!(tabular(&batches[0]).0[0].header_end, 5);
        let all: Vec<Vec<String>> = batches.iter().flat_map(batch_rows).collect();
        assert_eq!(
            all,
            vec![row(&["1", "2"]), row(&["33", "4"]), row(&["5", "x\r\ny"])]
        );
    }

    #[test]
    fn csv_without_trailing_newline() {
        let dir = TempDir::new().expect("tempdir");
        let data = b"a,b\n1,2\n3,4";
        let path = write(&dir, "nt.csv", data);
        let batches = partition_tabular(&[csv_source(&path)], 1 << 20).expect("partition");
        assert_eq!(batches.len(), 1);
        let (segments, rows, bytes, key) = tabular(&batches[0]);
        assert_eq!((rows, bytes, key), (2, 7, None));
        assert_eq!(segments[0].ranges, vec![(4, data.len() as u64)]);
        assert_eq!(
            batch_rows(&batches[0]),
            vec![row(&["1", "2"]), row(&["3", "4"])]
        );
    }

    #[test]
    fn csv_ragged_row_is_an_error_naming_the_record() {
        let dir = TempDir::new().expect("tempdir");
        let path = write(&dir, "bad.csv", b"a,b\n1,2\n3\n");
        match partition_tabular(&[csv_source(&path)], 10) {
            Err(PartitionError::Csv {
                path: p,
                record,
                byte,
                ..
            }) => {
                assert_eq!(p, path);
                assert_eq!((record, byte), (2, 8));
            }
            other => panic!("expected a CSV error, got {other:?}"),
        }
    }
}
