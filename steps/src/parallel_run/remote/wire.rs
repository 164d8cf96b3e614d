//! The agent protocol's wire: frames and messages between the coordinator (inside
//! `stepgraph run`) and its agents.
//!
//! A frame is an 8-byte header (the JSON message's length and the blob's length, both u32
//! big-endian), the JSON message, then the blob (raw bytes: a result's rows, so output crosses
//! the wire byte for byte). Both lengths are checked against the reader's limit *before*
//! anything is allocated: before authentication the limit is [`HANDSHAKE_LIMIT`], so a hostile
//! peer can make the coordinator hold at most a few KiB, and the handshake runs under a read
//! timeout, so it cannot hang it either.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::super::partition::{MiniBatchSpec, Segment};
use super::super::protocol::{Init, Items, Run, WirePath};
use super::super::worker::TryOutcome;
use super::super::MAX_PROTOCOL_LINE;

/// The agent protocol's version (sent in [`Hello`]); an agent of another version is refused.
pub(crate) const AGENT_PROTOCOL: u32 = 1;

/// The largest JSON message or blob a peer may send before it has authenticated.
pub(crate) const HANDSHAKE_LIMIT: u32 = 4096;

/// The largest JSON message or blob an authenticated peer may send: a worker's whole result
/// line is at most [`MAX_PROTOCOL_LINE`], so its rows are too; a mini-batch's request is
/// bounded the same way, with room for the framing.
pub(crate) const FRAME_LIMIT: u32 = (MAX_PROTOCOL_LINE as u32).saturating_add(1 << 20);

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// The peer closed the connection (or died) between frames or within one.
    #[error("connection closed by the other side")]
    Closed,
    /// The connection failed or timed out.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A length in a frame's header is over the limit (nothing was allocated for it).
    #[error("frame of {len} bytes over the limit of {limit} bytes")]
    TooLarge {
        /// The length the peer announced.
        len: u32,
        /// The limit.
        limit: u32,
    },
    /// The message is not the JSON of a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Write one frame (and flush).
pub(crate) fn write_frame<W: Write, M: Serialize>(
    out: &mut W,
    message: &M,
    blob: &[u8],
) -> Result<(), WireError> {
    let json = serde_json::to_vec(message)?;
    let too_large = |len: usize| WireError::TooLarge {
        len: u32::try_from(len).unwrap_or(u32::MAX),
        limit: FRAME_LIMIT,
    };
    let json_len = u32::try_from(json.len())
        .ok()
        .filter(|n| *n <= FRAME_LIMIT)
        .ok_or_else(|| too_large(json.len()))?;
    let blob_len = u32::try_from(blob.len())
        .ok()
        .filter(|n| *n <= FRAME_LIMIT)
        .ok_or_else(|| too_large(blob.len()))?;
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&json_len.to_be_bytes());
    head[4..].copy_from_slice(&blob_len.to_be_bytes());
    // One write for small frames: no partial header on the wire when the peer is slow.
    let mut buf = Vec::with_capacity(8 + json.len() + blob.len().min(1 << 16));
    buf.extend_from_slice(&head);
    buf.extend_from_slice(&json);
    if blob.len() <= 1 << 16 {
        buf.extend_from_slice(blob);
        out.write_all(&buf)?;
    } else {
        out.write_all(&buf)?;
        out.write_all(blob)?;
    }
    out.flush()?;
    Ok(())
}

/// Read one frame: its message and blob, each at most `limit` bytes.
pub(crate) fn read_frame<R: Read, M: for<'de> Deserialize<'de>>(
    input: &mut R,
    limit: u32,
) -> Result<(M, Vec<u8>), WireError> {
    let closed = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    };
    let mut head = [0u8; 8];
    input.read_exact(&mut head).map_err(closed)?;
    let [a, b, c, d, e, f, g, h] = head;
    let json_len = u32::from_be_bytes([a, b, c, d]);
    let blob_len = u32::from_be_bytes([e, f, g, h]);
    for len in [json_len, blob_len] {
        if len > limit {
            return Err(WireError::TooLarge { len, limit });
        }
    }
    let mut json = vec![0u8; json_len as usize];
    input.read_exact(&mut json).map_err(closed)?;
    let mut blob = vec![0u8; blob_len as usize];
    input.read_exact(&mut blob).map_err(closed)?;
    Ok((serde_json::from_slice(&json)?, blob))
}

/// The agent's first message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// [`AGENT_PROTOCOL`].
    pub(crate) protocol: u32,
    /// The agent's fresh nonce (hex), which the coordinator's proof covers.
    pub(crate) nonce: String,
    /// The agent's node (`SLURMD_NODENAME`, else the host's name).
    pub(crate) node: String,
    /// The agent's process id (for its log).
    pub(crate) pid: u32,
}

/// The coordinator's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Challenge {
    /// The coordinator's fresh nonce (hex), which the agent's proof covers.
    pub(crate) nonce: String,
    /// The coordinator's proof that it holds the token, over both nonces (hex).
    pub(crate) proof: String,
}

/// The agent's answer to [`Challenge`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Proof {
    /// The agent's proof that it holds the token, over both nonces (hex).
    pub(crate) proof: String,
}

/// How one worker process of an agent starts: the coordinator's `ProcessSpec`, on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireProcess {
    /// The global worker number (`worker-N`).
    pub(crate) worker: usize,
    /// The program and its arguments.
    pub(crate) argv: Vec<WirePath>,
    /// The folder it runs in (the copy of the source snapshot).
    pub(crate) cwd: WirePath,
    /// Its whole environment.
    pub(crate) env: Vec<(WirePath, WirePath)>,
    /// The `init` request it is sent.
    pub(crate) init: Init,
    /// run_invocation_timeout, in milliseconds.
    pub(crate) timeout_ms: u64,
}

/// A path the agent must see (on the shared file system) before it starts workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NeededPath {
    /// What it is (`input "scores"`, `source snapshot`, `Python environment`).
    pub(crate) what: String,
    /// Where.
    pub(crate) path: WirePath,
}

/// What the coordinator tells an agent after it authenticated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Setup {
    /// The agent's node slot (0 …) and its node name as the logs show it.
    pub(crate) slot: usize,
    /// The node's name in the logs (unique among the step's agents).
    pub(crate) node: String,
    /// The step's `logs/` folder.
    pub(crate) log_dir: WirePath,
    /// The workers to start, in process order.
    pub(crate) processes: Vec<WireProcess>,
    /// What must be visible first.
    pub(crate) needs: Vec<NeededPath>,
}

/// A message from the coordinator to an agent (after the handshake).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToAgent {
    /// The agent authenticated: start these workers.
    Setup(Setup),
    /// Refused (the reason); the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
    /// Run one try of a mini-batch on process `process` of this agent.
    Run {
        /// The process (0 … process_count_per_node - 1).
        process: usize,
        /// The mini-batch's item count (rows of a tabular one).
        items: u64,
        /// The mini-batch, as the worker protocol's `run` request.
        run: Run,
    },
    /// Still here (sent when idle, so a dead link is noticed).
    Ping,
    /// Shut the workers down and exit.
    Shutdown,
}

/// A message from an agent to the coordinator (after the handshake).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToCoordinator {
    /// The workers are set up; the agent takes mini-batches.
    Ready,
    /// The agent cannot work (a path it cannot see); it exits. The step fails with this.
    Fatal {
        /// What is wrong, naming the path.
        message: String,
    },
    /// A try finished (its rows are the frame's blob).
    Done {
        /// The process that ran it.
        process: usize,
        /// The mini-batch.
        index: u64,
        /// How it ended.
        outcome: WireOutcome,
    },
    /// Still here.
    Ping,
}

/// A [`TryOutcome`] on the wire; the rows of `ok` travel as the frame's blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum WireOutcome {
    /// run() returned `count` elements.
    Ok {
        /// Elements returned.
        count: u64,
        /// The column names (csv).
        columns: Option<Vec<String>>,
    },
    /// run() raised.
    Raised {
        /// The error text.
        error: String,
    },
    /// The worker died.
    Died {
        /// The error text.
        error: String,
    },
    /// run() timed out after this many seconds.
    TimedOut {
        /// The timeout.
        secs: u64,
    },
    /// init() failed.
    InitFailed {
        /// The error text.
        error: String,
    },
    /// The agent is stopping: the try did not run.
    Cancelled,
}

impl WireOutcome {
    /// The wire form of `outcome` and its blob.
    pub(crate) fn of(outcome: TryOutcome) -> (Self, Vec<u8>) {
        match outcome {
            TryOutcome::Ok {
                count,
                rows,
                columns,
            } => (WireOutcome::Ok { count, columns }, rows),
            TryOutcome::Raised(error) => (WireOutcome::Raised { error }, Vec::new()),
            TryOutcome::Died(error) => (WireOutcome::Died { error }, Vec::new()),
            TryOutcome::TimedOut(secs) => (WireOutcome::TimedOut { secs }, Vec::new()),
            TryOutcome::InitFailed(error) => (WireOutcome::InitFailed { error }, Vec::new()),
            TryOutcome::Cancelled | TryOutcome::Lost(_) => (WireOutcome::Cancelled, Vec::new()),
        }
    }

    /// The try's outcome; a try the agent did not run is lost (requeued).
    pub(crate) fn into_outcome(self, blob: Vec<u8>) -> TryOutcome {
        match self {
            WireOutcome::Ok { count, columns } => TryOutcome::Ok {
                count,
                rows: blob,
                columns,
            },
            WireOutcome::Raised { error } => TryOutcome::Raised(error),
            WireOutcome::Died { error } => TryOutcome::Died(error),
            WireOutcome::TimedOut { secs } => TryOutcome::TimedOut(secs),
            WireOutcome::InitFailed { error } => TryOutcome::InitFailed(error),
            WireOutcome::Cancelled => TryOutcome::Lost(None),
        }
    }
}

/// The mini-batch a [`ToAgent::Run`] carries, as the agent's worker takes it.
pub(crate) fn spec_of(run: &Run, items: u64) -> MiniBatchSpec {
    match &run.items {
        Items::Files {
            files,
            partition_key_value,
            partitions,
        } => MiniBatchSpec::Files {
            files: files.iter().map(|f| f.0.clone()).collect(),
            partition_key_value: partition_key_value.clone(),
            partitions: partitions.clone(),
        },
        Items::Tabular {
            segments,
            partition_key_value,
            partitions,
        } => {
            let segments: Vec<Segment> = segments
                .iter()
                .map(|s| Segment {
                    path: s.path.0.clone(),
                    format: s.format,
                    header_end: s.header_end,
                    ranges: s.ranges.clone(),
                })
                .collect();
            let bytes = segments
                .iter()
                .flat_map(|s| &s.ranges)
                .map(|(a, b)| b.saturating_sub(*a))
                .sum();
            MiniBatchSpec::Tabular {
                segments,
                rows: items,
                bytes,
                partition_key_value: partition_key_value.clone(),
                partitions: partitions.clone(),
            }
        }
    }
}

/// An environment on the wire.
pub(crate) fn env_to_wire(
    env: &BTreeMap<std::ffi::OsString, std::ffi::OsString>,
) -> Vec<(WirePath, WirePath)> {
    env.iter()
        .map(|(k, v)| (WirePath(PathBuf::from(k)), WirePath(PathBuf::from(v))))
        .collect()
}

/// An environment from the wire.
pub(crate) fn env_from_wire(
    env: &[(WirePath, WirePath)],
) -> BTreeMap<std::ffi::OsString, std::ffi::OsString> {
    env.iter()
        .map(|(k, v)| (k.0.clone().into_os_string(), v.0.clone().into_os_string()))
        .collect()
}

/// A connection read under one deadline for a whole exchange (a handshake): each read
/// may take only what is left of it, so a peer trickling a byte at a time cannot hold the
/// exchange open past it.
pub(crate) struct Deadline<'a> {
    stream: &'a mut std::net::TcpStream,
    until: std::time::Instant,
}

impl<'a> Deadline<'a> {
    /// Reads of `stream` until `within` from now.
    pub(crate) fn new(stream: &'a mut std::net::TcpStream, within: std::time::Duration) -> Self {
        Deadline {
            stream,
            until: std::time::Instant::now() + within,
        }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self
            .until
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the handshake took too long",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_round_trips_with_its_blob_byte_for_byte() {
        let rows = b"a,b\n\xff\x00\n".to_vec();
        let (msg, blob) = WireOutcome::of(TryOutcome::Ok {
            count: 2,
            rows: rows.clone(),
            columns: Some(vec!["x".into()]),
        });
        let mut buf = Vec::new();
        let done = ToCoordinator::Done {
            process: 1,
            index: 7,
            outcome: msg,
        };
        write_frame(&mut buf, &done, &blob).expect("write");
        let (back, blob): (ToCoordinator, Vec<u8>) =
            read_frame(&mut buf.as_slice(), FRAME_LIMIT).expect("read");
        let ToCoordinator::Done {
            process: 1,
            index: 7,
            outcome,
        } = back
        else {
            panic!("not the frame written: {back:?}");
        };
        assert_eq!(
            outcome.into_outcome(blob),
            TryOutcome::Ok {
                count: 2,
                rows,
                columns: Some(vec!["x".into()])
            }
        );
    }

    #[test]
    fn an_oversized_header_is_refused_before_allocating() {
        let mut frame = Vec::new();
        frame.extend_from_slice(&u32::MAX.to_be_bytes());
        frame.extend_from_slice(&0u32.to_be_bytes());
        let r: Result<(Hello, Vec<u8>), _> = read_frame(&mut frame.as_slice(), HANDSHAKE_LIMIT);
        assert!(
            matches!(
                r,
                Err(WireError::TooLarge {
                    len: u32::MAX,
                    limit: HANDSHAKE_LIMIT
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn garbage_and_truncated_frames_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            &b"\x00\x00"[..],
            &b"\x00\x00\x00\x05\x00\x00\x00\x00{\"a\""[..],
            &b"\x00\x00\x00\x03\x00\x00\x00\x00abc"[..],
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ] {
            let r: Result<(Hello, Vec<u8>), _> = read_frame(&mut &bytes[..], HANDSHAKE_LIMIT);
            assert!(r.is_err(), "{bytes:?} was read as {r:?}");
        }
    }

    #[test]
    fn a_run_request_gives_back_the_mini_batch() {
        let spec = MiniBatchSpec::Tabular {
            segments: vec![Segment {
                path: "/d/a.csv".into(),
                format: stepgraph_engine::TabularFormat::Csv,
                header_end: 4,
                ranges: vec![(4, 10), (20, 25)],
            }],
            rows: 3,
            bytes: 11,
            partition_key_value: None,
            partitions: Vec::new(),
        };
        let run = Run::new(5, &spec);
        assert_eq!(spec_of(&run, spec.item_count()), spec);
        let files = MiniBatchSpec::Files {
            files: vec!["/d/x".into(), "/d/y".into()],
            partition_key_value: None,
            partitions: Vec::new(),
        };
        assert_eq!(spec_of(&Run::new(0, &files), 2), files);
    }
}
