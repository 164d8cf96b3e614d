//! The worker protocol as types: what stepgraph sends a worker ([`Request`]) and what a
//! worker sends back ([`Reply`]), one JSON object per line, tagged by `"type"` (in the manner
//! of rust-analyzer's proc-macro-api `msg.rs`: one enum per direction, one variant per
//! message). The process workers, the Rust in-process workers' tests and the README's
//! protocol section (checked by the tests below) all use these types, and an agent speaking
//! to workers on another machine speaks them too.
//!
//! The wire format is protocol version 1, as `steps/python/stepgraph_worker.py` and any
//! `entry_command` program speak it:
//! - a path is a JSON string when it is valid UTF-8, else `{"b64": "<standard base64 of its
//!   bytes>"}` ([`WirePath`]);
//! - a line is at most [`MAX_PROTOCOL_LINE`] bytes without its newline ([`read_line`]);
//! - replies are read leniently where stepgraph always was lenient: unknown fields are
//!   ignored, a missing or mistyped `error` text takes a default, rows and columns that are
//!   not strings are kept as their JSON text.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::config::AppendRowFormat;
use super::partition::{MiniBatchSpec, PartitionValues, Segment};
use super::MAX_PROTOCOL_LINE;
use stepgraph_engine::TabularFormat;

/// The protocol version stepgraph speaks (`init`'s `"protocol"`).
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// A message from stepgraph to a worker (on the worker's stdin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Start: load the entry and call its `init()`. Answered by [`Reply::Ready`] or
    /// [`Reply::InitFailed`].
    Init(Init),
    /// Process one mini-batch. Answered by [`Reply::Result`] or [`Reply::Error`] with the
    /// same `index`.
    Run(Run),
    /// Call the entry's `shutdown()` and exit. Answered by [`Reply::Bye`].
    Shutdown,
}

/// The `init` request: everything a worker is told once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Init {
    /// The protocol version ([`PROTOCOL_VERSION`]).
    pub(crate) protocol: u32,
    /// The Python entry script (empty for an `entry_command` program).
    pub(crate) entry_script: WirePath,
    /// The copy of the source folder the worker runs in.
    pub(crate) source_directory: WirePath,
    /// The step's resolved arguments.
    pub(crate) arguments: Vec<String>,
    /// Where `summary_only` entries write their files.
    pub(crate) output_dir: WirePath,
    /// The worker's working folder.
    pub(crate) working_dir: WirePath,
    /// The folder of the workers' logs (`logs/user`).
    pub(crate) log_dir: WirePath,
    /// The worker's name (`worker-0` …), Azure's `agent_name`.
    pub(crate) agent_name: String,
    /// Side input name → path.
    pub(crate) side_inputs: BTreeMap<String, WirePath>,
    /// The longest line either side may send ([`MAX_PROTOCOL_LINE`]).
    pub(crate) max_line_bytes: u64,
    /// How result rows are formatted: `text`, `csv` or `jsonl`.
    #[serde(with = "row_format")]
    pub(crate) append_row_format: AppendRowFormat,
    /// Whether results must carry their `rows` (output_action `append_row`).
    pub(crate) collect_rows: bool,
    /// For tabular inputs, what `run()` receives: `dataframe` (pandas required) or `records`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tabular_format: Option<String>,
}

/// The `run` request: one mini-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Run {
    /// The mini-batch's index (the same on every run).
    pub(crate) index: u64,
    /// Its items, tagged by `"kind"`.
    #[serde(flatten)]
    pub(crate) items: Items,
}

/// The items of a `run` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Items {
    /// File paths (a FileDataset).
    Files {
        /// The files, in input order.
        files: Vec<WirePath>,
        /// With partition keys: the values every file shares (absent without).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition_key_value: Option<BTreeMap<String, String>>,
        /// With a `partition_format`: each file's partition values (absent without).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        partitions: Vec<PartitionValues>,
    },
    /// Rows of CSV or JSON Lines files, as byte ranges (a TabularDataset).
    Tabular {
        /// One segment per file, in input order.
        segments: Vec<WireSegment>,
        /// With partition keys: the key columns' values (`null` without).
        partition_key_value: Option<BTreeMap<String, String>>,
        /// With a `partition_format`: each segment's partition values, appended to its rows
        /// as columns (absent without).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        partitions: Vec<PartitionValues>,
    },
}

/// The rows of one file in a `tabular` run request (see [`Segment`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireSegment {
    /// The file.
    pub(crate) path: WirePath,
    /// `csv` or `jsonl`.
    pub(crate) format: TabularFormat,
    /// CSV: the header is the bytes `[0, header_end)`.
    pub(crate) header_end: u64,
    /// The rows are the bytes `[start, end)` of each range.
    pub(crate) ranges: Vec<(u64, u64)>,
}

impl Run {
    /// The `run` request for mini-batch `index`.
    pub(crate) fn new(index: u64, spec: &MiniBatchSpec) -> Self {
        let items = match spec {
            MiniBatchSpec::Files {
                files,
                partition_key_value,
                partitions,
            } => Items::Files {
                files: files.iter().map(|f| WirePath::from(f.as_path())).collect(),
                partition_key_value: partition_key_value.clone(),
                partitions: partitions.clone(),
            },
            MiniBatchSpec::Tabular {
                segments,
                partition_key_value,
                partitions,
                ..
            } => Items::Tabular {
                segments: segments.iter().map(WireSegment::from).collect(),
                partition_key_value: partition_key_value.clone(),
                partitions: partitions.clone(),
            },
        };
        Run { index, items }
    }
}

impl From<&Segment> for WireSegment {
    fn from(s: &Segment) -> Self {
        WireSegment {
            path: WirePath::from(s.path.as_path()),
            format: s.format,
            header_end: s.header_end,
            ranges: s.ranges.clone(),
        }
    }
}

/// A message from a worker to stepgraph (on the worker's stdout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Reply {
    /// `init()` succeeded.
    Ready {
        /// The worker's process id (the Python harness sends it; optional).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "lenient"
        )]
        pid: Option<u64>,
    },
    /// `init()` failed; the worker exits.
    InitFailed {
        /// The traceback or error text.
        #[serde(default, deserialize_with = "lenient")]
        error: Option<String>,
    },
    /// A mini-batch finished.
    Result(RunResult),
    /// A mini-batch failed; the worker goes on.
    Error {
        /// The mini-batch's index.
        index: u64,
        /// The traceback or error text.
        #[serde(default, deserialize_with = "lenient")]
        error: Option<String>,
    },
    /// Answer to [`Request::Shutdown`]; the worker exits.
    Bye,
    /// The worker could not understand a request; it exits.
    ProtocolError {
        /// What was wrong.
        #[serde(default, deserialize_with = "lenient")]
        error: Option<String>,
    },
}

/// The `result` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunResult {
    /// The mini-batch's index.
    pub(crate) index: u64,
    /// The number of items that succeeded (may exceed the items given: a frame that grew).
    pub(crate) count: u64,
    /// The output lines (required when `init` said `collect_rows`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub(crate) rows: Option<Vec<Text>>,
    /// The column names (sent with `append_row_format` `csv`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient"
    )]
    pub(crate) columns: Option<Vec<Text>>,
}

/// A row or a column name in a `result`: a JSON string, or any other JSON value kept as its
/// JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub(crate) String);

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(match Value::deserialize(d)? {
            Value::String(s) => s,
            other => other.to_string(),
        }))
    }
}

/// A field that is `None` when it is missing, `null` or not of its type.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    Ok(T::deserialize(Value::deserialize(d)?).ok())
}

/// A line from a worker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// A reply of this protocol.
    Reply(Reply),
    /// A JSON value that is no reply (an unknown type, a missing or mistyped field).
    Other(Value),
}

/// A line from a worker that is not JSON; the message quotes a bounded excerpt of it.
#[derive(Debug, thiserror::Error)]
#[error("not a JSON line: {excerpt}")]
pub(crate) struct NotJson {
    /// The line's first and last bytes ([`crate::process::excerpt`]).
    excerpt: String,
    /// Why it does not parse.
    source: serde_json::Error,
}

/// Parse one line from a worker (blank lines are the caller's to skip).
///
/// # Errors
/// The line is not JSON.
pub(crate) fn parse_reply(line: &[u8]) -> Result<Incoming, NotJson> {
    let value: Value = serde_json::from_slice(line).map_err(|source| NotJson {
        excerpt: crate::process::excerpt(line.trim_ascii_end()),
        source,
    })?;
    Ok(match Reply::deserialize(&value) {
        Ok(reply) => Incoming::Reply(reply),
        Err(_) => Incoming::Other(value),
    })
}

/// For a JSON line that is not a valid [`Reply`]: when it is the `result` of mini-batch
/// `index` with a `count` that is no count, what is wrong with it.
pub(crate) fn bad_count(value: &Value, index: u64) -> Option<String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        index: u64,
        count: Option<Value>,
    }
    let probe = Probe::deserialize(value).ok()?;
    if probe.kind != "result" || probe.index != index {
        return None;
    }
    let given = probe
        .count
        .map_or_else(|| "none".to_string(), |c| c.to_string());
    Some(format!(
        "the result of mini-batch {index} has \"count\" {}, not a number of items from 0 to {}",
        crate::process::excerpt(given.as_bytes()),
        u64::MAX
    ))
}

/// Write `message` as one JSON line and flush.
///
/// # Errors
/// The write failed (the worker is gone) or the message cannot be serialised.
pub(crate) fn write_line<W: Write, M: Serialize>(out: &mut W, message: &M) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// What [`read_line`] found.
#[derive(Debug, PartialEq)]
pub(crate) enum LineRead {
    /// End of input, nothing read.
    Eof,
    /// A line (ending in a newline, or the last line of the input without one).
    Line,
    /// More than `max` bytes without a newline; `buf` holds `max + 1` of them.
    TooLong,
}

/// Read one line into `buf`, never more than `max` bytes plus its newline (the protocol's
/// limit is [`MAX_PROTOCOL_LINE`]).
///
/// # Errors
/// Reading failed.
pub(crate) fn read_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let n = reader
        .by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', buf)?;
    Ok(if n == 0 {
        LineRead::Eof
    } else if buf.last() == Some(&b'\n') || buf.len() <= max {
        LineRead::Line
    } else {
        LineRead::TooLong
    })
}

/// The error of a line over [`MAX_PROTOCOL_LINE`].
pub(crate) fn too_long() -> String {
    format!("worker protocol line over {MAX_PROTOCOL_LINE} bytes")
}

/// A path in a protocol message: a JSON string when it is valid UTF-8, else
/// `{"b64": "<standard base64 of its bytes>"}`, so names are passed exactly, never lossily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WirePath(pub(crate) PathBuf);

impl From<&Path> for WirePath {
    fn from(p: &Path) -> Self {
        WirePath(p.to_path_buf())
    }
}

impl Serialize for WirePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.to_str() {
            Some(text) => s.serialize_str(text),
            None => B64 {
                b64: base64(self.0.as_os_str().as_bytes()),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for WirePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            Bytes(B64),
        }
        Ok(WirePath(match Form::deserialize(d)? {
            Form::Text(s) => PathBuf::from(s),
            Form::Bytes(B64 { b64 }) => {
                let bytes = unbase64(&b64)
                    .ok_or_else(|| serde::de::Error::custom("\"b64\" is not standard base64"))?;
                PathBuf::from(OsStr::from_bytes(&bytes))
            }
        }))
    }
}

/// The form of a path that is not UTF-8.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct B64 {
    b64: String,
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648, with padding).
pub(crate) fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 with padding; `None` when `text` is not that.
fn unbase64(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.chunks(4);
    let last = quads.len().saturating_sub(1);
    for (q, quad) in quads.enumerate() {
        let pad = quad.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && q != last) {
            return None;
        }
        let mut n = 0u32;
        for c in &quad[..4 - pad] {
            let v = BASE64.iter().position(|a| a == c)?;
            n = (n << 6) | v as u32;
        }
        n <<= 6 * pad as u32;
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// `append_row_format` as its name (`text`, `csv`, `jsonl`).
mod row_format {
    use super::AppendRowFormat;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(f: &AppendRowFormat, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(f.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<AppendRowFormat, D::Error> {
        let name = String::deserialize(d)?;
        AppendRowFormat::parse(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
