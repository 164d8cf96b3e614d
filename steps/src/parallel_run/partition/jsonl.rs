//! The JSON Lines side of partitioning: non-blank lines as records, scanned without copying;
//! for key grouping, each line parsed as a JSON object.

use fs_err::File;
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::{io_error, PartitionError, UTF8_BOM};

/// True for the bytes that may make up a blank JSON Lines line (JSON
/// whitespace).
pub(super) fn is_json_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Calls `on_record` with the byte range (terminator included) of every
/// non-blank line of a JSON Lines file, without parsing or copying the lines.
pub(super) fn scan_jsonl_lines(
    path: &Path,
    buffer_bytes: usize,
    mut on_record: impl FnMut((u64, u64)),
) -> Result<(), PartitionError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = BufReader::with_capacity(buffer_bytes.max(1), file);
    let mut offset = 0u64; // file offset of the buffer's first byte
    let mut line_start = 0u64;
    let mut non_blank = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(path, e)),
        };
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        let mut i = 0;
        while i < len {
            let rest = &buf[i..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    non_blank =
                        non_blank || rest[..newline].iter().any(|&b| !is_json_whitespace(b));
                    let end = offset + (i + newline + 1) as u64;
                    if non_blank {
                        on_record((line_start, end));
                    }
                    line_start = end;
                    non_blank = false;
                    i += newline + 1;
                }
                None => {
                    non_blank = non_blank || rest.iter().any(|&b| !is_json_whitespace(b));
                    i = len;
                }
            }
        }
        offset += len as u64;
        reader.consume(len);
    }
    if non_blank {
        on_record((line_start, offset));
    }
    Ok(())
}

/// Calls `on_record` with the key values and byte range of every non-blank line
/// of a JSON Lines file; each line must be a JSON object holding every key.
pub(super) fn scan_jsonl_keys(
    path: &Path,
    keys: &[String],
    buffer_bytes: usize,
    mut on_record: impl FnMut(&[String], (u64, u64)),
) -> Result<(), PartitionError> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = BufReader::with_capacity(buffer_bytes.max(1), file);
    let mut line = Vec::new();
    let mut values = vec![String::new(); keys.len()];
    let mut offset = 0u64;
    let mut line_number = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        line_number += 1;
        let start = offset;
        offset += n as u64;
        if line.iter().all(|&b| is_json_whitespace(b)) {
            continue;
        }
        let text = if line_number == 1 {
            line.strip_prefix(UTF8_BOM).unwrap_or(&line)
        } else {
            &line
        };
        let json_error = |message: String| PartitionError::JsonLine {
            path: path.to_path_buf(),
            line: line_number,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| json_error(e.to_string()))?;
        let object = value.as_object().ok_or_else(|| {
            json_error(format!(
                "expected a JSON object, found {}",
                json_kind(&value)
            ))
        })?;
        for (slot, key) in values.iter_mut().zip(keys) {
            let value = object
                .get(key)
                .ok_or_else(|| PartitionError::MissingKeyColumn {
                    path: path.to_path_buf(),
                    column: key.clone(),
                    line: Some(line_number),
                })?;
            slot.clear();
            match value {
                serde_json::Value::String(s) => slot.push_str(s),
                // Writing to a String cannot fail.
                other => {
                    let _ = write!(slot, "{other}");
                }
            }
        }
        on_record(&values, (start, offset));
    }
    Ok(())
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::*;
    use tempfile::TempDir;

    // ---- partition_tabular: JSON Lines -----------------------------------------

    #[test]
    fn jsonl_ranges_skip_blank_lines() {
        let dir = TempDir::new().expect("tempdir");
        let data = b"\n{\"a\":1}\n{\"a\":2}\n  \n\r\n{\"a\":3}\r\n\n{\"a\":4}";
        let path = write(&dir, "b.jsonl", data);
        let batches = partition_tabular(&[jsonl_source(&path)], 100).expect("partition");
        assert_eq!(batches.len(), 1);
        let (segments, rows, bytes, _) = tabular(&batches[0]);
        assert_eq!(rows, 4);
        assert_eq!(segments[0].header_end, 0);
        assert_eq!(segments[0].ranges, vec![(1, 17), (22, 31), (32, 39)]);
        assert_eq!(bytes, 16 + 9 + 7);
        let all = batch_rows(&batches[0]);
        assert_eq!(
            all,
            (1..=4).map(|i| vec![i.to_string()]).collect::<Vec<_>>()
        );
        // One record per batch.
        let batches = partition_tabular(&[jsonl_source(&path)], 1).expect("partition");
        let ranges: Vec<Vec<(u64, u64)>> = batches
            .iter()
            .map(|b| tabular(b).0[0].ranges.clone())
            .collect();
        assert_eq!(
            ranges,
            vec![vec![(1, 9)], vec![(9, 17)], vec![(22, 31)], vec![(32, 39)]]
        );
    }
}
