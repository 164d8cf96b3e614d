//! Content-defined mini-batches for `incremental` steps: boundaries that depend on the data
//! around them, not on positions, so an insertion, deletion or edit disturbs only the
//! mini-batches around it and every other mini-batch keeps its exact content (and so its
//! memo key).
//!
//! * Files ([`partition_files_cdc`]), in input order: a boundary after a file whose name's
//!   hash says so (one in `avg - min + 1` names), never before `min` files, always at `max`
//!   files (`min` = ½ of the average, `max` = 4×). A file's content never moves a boundary:
//!   editing a file changes only its own mini-batch.
//! * Tabular rows ([`partition_tabular_cdc`]): a gear rolling hash (FastCDC's) runs over the
//!   bytes of the records; a boundary falls at the first record end after a position where
//!   the hash has its low bits zero, once the mini-batch holds at least `min` bytes, and at
//!   the first record end past `max` bytes. The hash depends only on the last 64 bytes, so
//!   boundaries resynchronise right after an edit. Each file starts a new mini-batch.
//!
//! Why ½× rather than FastCDC's ¼×: an edit lands in a mini-batch with a probability
//! proportional to its size, so what an edit reruns is the size-biased mean, which a wide
//! spread of sizes inflates. In simulation (average 10 files), ½× reruns 11 files per
//! modified file and 13 per inserted one, against 15 and 17 with ¼×; FastCDC's normalised
//! chunking (4× rarer boundaries before the average, 4× likelier after) gives 11 and 19, and
//! resynchronises later after an insertion. An average of one puts every item alone.
use std::io::{BufReader, Read};
use std::path::PathBuf;

use stepgraph_engine::TabularFormat;

use super::csv::CsvScanner;
use super::jsonl::scan_jsonl_lines;
use super::{
    io_error, BatchBuilder, MiniBatchSpec, PartitionError, Segment, TabularSource, IO_BUFFER_BYTES,
};

/// The bounds around an average mini-batch size: (min, max) = (½×, 4×), at least 1.
pub fn bounds(average: u64) -> (u64, u64) {
    let average = average.max(1);
    ((average / 2).max(1), average.saturating_mul(4).max(1))
}

/// The 64-bit hash deciding a boundary after a file named `relative`.
fn name_hash(relative: &str) -> u64 {
    let h = blake3::hash(relative.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// Files (full path, name relative to its dataset) cut into content-defined mini-batches of
/// about `average` files each.
pub fn partition_files_cdc(files: &[(PathBuf, String)], average: u64) -> Vec<MiniBatchSpec> {
    let average = average.max(1);
    let (min, max) = bounds(average);
    // One boundary in `average - min + 1` names, after the first `min` files of a
    // mini-batch: mini-batches of `average` files on average.
    let modulus = (average - min + 1).max(1);
    let mut out = Vec::new();
    let mut current: Vec<PathBuf> = Vec::new();
    for (path, relative) in files {
        current.push(path.clone());
        let n = current.len() as u64;
        if average == 1 || n >= max || (n >= min && name_hash(relative).is_multiple_of(modulus)) {
            out.push(files_spec(std::mem::take(&mut current)));
        }
    }
    if !current.is_empty() {
        out.push(files_spec(current));
    }
    out
}

fn files_spec(files: Vec<PathBuf>) -> MiniBatchSpec {
    MiniBatchSpec::Files {
        files,
        partition_key_value: None,
        partitions: Vec::new(),
    }
}

/// FastCDC's gear table: 256 pseudo-random 64-bit values (splitmix64 of the byte), fixed
/// forever (changing it would move every boundary and so every memo key).
const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut z = (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

static GEAR: [u64; 256] = gear_table();

/// The mask whose zero test fires about once in `span` bytes (the high bits of the gear
/// hash, which mix the most bytes).
fn mask_for(span: u64) -> u64 {
    let bits = 64 - span.max(2).leading_zeros() - 1; // floor(log2(span))
    let bits = bits.clamp(1, 48);
    (!0u64) << (64 - bits)
}

/// The digest of a tabular mini-batch's content, as its key needs it: blake3 over the
/// file format, the header (length, bytes) and the records' bytes in order. Computed while
/// partitioning by [`partition_tabular_cdc`], and from a [`Segment`] by [`segment_digest`];
/// both give the same digest for the same rows.
pub struct ContentHasher {
    hasher: blake3::Hasher,
    /// Bytes not hashed yet: blake3 hashes many 1 KiB chunks at once (SIMD) only when
    /// given large inputs, and records come a few hundred bytes at a time.
    pending: Vec<u8>,
}

/// How many bytes [`ContentHasher`] gathers before hashing them.
const HASH_BLOCK: usize = 256 * 1024;

impl ContentHasher {
    /// Start with the format and the header bytes.
    pub fn new(format: TabularFormat, header: &[u8]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(match format {
            TabularFormat::Csv => b"csv\n",
            TabularFormat::JsonLines => b"jsonl\n",
        });
        hasher.update(&(header.len() as u64).to_le_bytes());
        hasher.update(header);
        ContentHasher {
            hasher,
            pending: Vec::with_capacity(HASH_BLOCK),
        }
    }

    /// Add record bytes (any split of them gives the same digest).
    pub fn update(&mut self, bytes: &[u8]) {
        if self.pending.is_empty() && bytes.len() >= HASH_BLOCK {
            self.hasher.update(bytes);
            return;
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= HASH_BLOCK {
            self.hasher.update(&self.pending);
            self.pending.clear();
        }
    }

    /// The digest.
    pub fn finish(&self) -> blake3::Hash {
        let mut h = self.hasher.clone();
        h.update(&self.pending);
        h.finalize()
    }
}

/// The [`ContentHasher`] digest of a segment's rows, read from its file.
///
/// # Errors
/// The file cannot be read.
pub fn segment_digest(segment: &Segment) -> Result<blake3::Hash, PartitionError> {
    use fs_err::os::unix::fs::FileExt;
    let path = &segment.path;
    let file = fs_err::File::open(path).map_err(|e| io_error(path, e))?;
    let mut header = vec![0u8; usize::try_from(segment.header_end).unwrap_or(0)];
    file.read_exact_at(&mut header, 0)
        .map_err(|e| io_error(path, e))?;
    let mut h = ContentHasher::new(segment.format, &header);
    let mut buf = vec![0u8; 256 * 1024];
    for &(start, end) in &segment.ranges {
        let mut at = start;
        while at < end {
            let n = usize::try_from((end - at).min(buf.len() as u64)).unwrap_or(buf.len());
            let chunk = buf.get_mut(..n).unwrap_or_default();
            file.read_exact_at(chunk, at)
                .map_err(|e| io_error(path, e))?;
            h.update(chunk);
            at += n as u64;
        }
    }
    Ok(h.finish())
}

/// Cuts one file's records into content-defined mini-batches while reading their bytes
/// once, sequentially (the gear hash and each mini-batch's content digest).
struct Chunker<'a> {
    file_index: usize,
    source: &'a TabularSource,
    reader: BufReader<fs_err::File>,
    pos: u64,
    hash: u64,
    min: u64,
    max: u64,
    average: u64,
    strict: u64,
    header: Option<(u64, Vec<u8>)>,
    current: BatchBuilder,
    content: Option<ContentHasher>,
    armed: bool,
    buf: Vec<u8>,
    out: Vec<(MiniBatchSpec, blake3::Hash)>,
}

impl<'a> Chunker<'a> {
    fn new(
        file_index: usize,
        source: &'a TabularSource,
        average: u64,
    ) -> Result<Self, PartitionError> {
        let (min, max) = bounds(average);
        let file = fs_err::File::open(&source.path).map_err(|e| io_error(&source.path, e))?;
        Ok(Chunker {
            file_index,
            source,
            reader: BufReader::with_capacity(IO_BUFFER_BYTES, file),
            pos: 0,
            hash: 0,
            min,
            max,
            average,
            strict: mask_for((average - min).max(1)),
            header: None,
            current: BatchBuilder::default(),
            content: None,
            armed: false,
            buf: vec![0u8; 64 * 1024],
            out: Vec::new(),
        })
    }

    /// The next record, `[start, end)`, whose file's header ends at `header_end`.
    fn record(&mut self, header_end: u64, (start, end): (u64, u64)) -> Result<(), PartitionError> {
        let path = &self.source.path;
        if self.header.is_none() {
            let mut header = vec![0u8; usize::try_from(header_end).unwrap_or(0)];
            self.reader
                .read_exact(&mut header)
                .map_err(|e| io_error(path, e))?;
            self.pos = header_end;
            self.header = Some((header_end, header));
        }
        if self.content.is_none() {
            let header = self
                .header
                .as_ref()
                .map(|(_, h)| h.as_slice())
                .unwrap_or(&[]);
            self.content = Some(ContentHasher::new(self.source.format, header));
        }
        skip(&mut self.reader, &mut self.pos, start, path)?;
        let mut left = end.saturating_sub(start);
        let mut offset = self.current.bytes;
        while left > 0 {
            let n = usize::try_from(left.min(self.buf.len() as u64)).unwrap_or(self.buf.len());
            let chunk = self.buf.get_mut(..n).unwrap_or_default();
            self.reader
                .read_exact(chunk)
                .map_err(|e| io_error(path, e))?;
            // FastCDC's skip: the first test is at `min` bytes and the gear hash there
            // depends only on the 64 bytes before it, so bytes further back are not hashed.
            let skip = self
                .min
                .saturating_sub(64)
                .saturating_sub(offset)
                .min(n as u64);
            offset += skip;
            for &b in chunk.iter().skip(usize::try_from(skip).unwrap_or(n)) {
                self.hash = (self.hash << 1).wrapping_add(GEAR[b as usize]);
                offset += 1;
                if !self.armed && offset >= self.min && self.hash & self.strict == 0 {
                    self.armed = true;
                }
            }
            if let Some(c) = self.content.as_mut() {
                c.update(chunk);
            }
            self.pos += n as u64;
            left -= n as u64;
        }
        self.current
            .push(self.file_index, self.source, header_end, (start, end));
        if self.armed || self.current.bytes >= self.max || self.average == 1 {
            self.cut();
        }
        Ok(())
    }

    fn cut(&mut self) {
        if self.current.rows == 0 {
            return;
        }
        let digest = self
            .content
            .take()
            .map(|c| c.finish())
            .unwrap_or_else(|| blake3::hash(b""));
        let spec = std::mem::take(&mut self.current).into_spec(None);
        self.out.push((spec, digest));
        self.armed = false;
    }
}

/// Tabular files cut into content-defined mini-batches of about `average` bytes of records,
/// each with the [`ContentHasher`] digest of its rows. Each file is read twice, in one
/// streaming pass (record boundaries, and the bytes of the records): memory does not grow
/// with the file.
///
/// # Errors
/// A file cannot be read, or a CSV record is malformed (as [`super::partition_tabular`]).
pub fn partition_tabular_cdc(
    sources: &[TabularSource],
    average: u64,
) -> Result<Vec<(MiniBatchSpec, blake3::Hash)>, PartitionError> {
    let average = average.max(1);
    let mut out = Vec::new();
    for (file_index, source) in sources.iter().enumerate() {
        let mut chunker = Chunker::new(file_index, source, average)?;
        // Two threads: one finds the records (the CSV or JSON Lines scan), the other reads
        // their bytes (the gear hash and the digests), so the two costs overlap.
        let (tx, rx) = crossbeam_channel::bounded::<(u64, Vec<(u64, u64)>)>(16);
        let scanned = std::thread::scope(|scope| {
            let scanner = scope.spawn(move || scan_records(source, &tx));
            let mut chunked = Ok(());
            for (header_end, ranges) in rx.iter() {
                if chunked.is_err() {
                    continue;
                }
                for range in ranges {
                    if let Err(e) = chunker.record(header_end, range) {
                        chunked = Err(e);
                        break;
                    }
                }
            }
            let scanned = scanner.join().unwrap_or_else(|_| {
                Err(io_error(
                    &source.path,
                    std::io::Error::other("the record scanner stopped unexpectedly"),
                ))
            });
            scanned.and(chunked)
        });
        scanned?;
        chunker.cut();
        out.extend(chunker.out);
    }
    Ok(out)
}

/// Send `source`'s record ranges in batches, each with the end of the file's header.
fn scan_records(
    source: &TabularSource,
    tx: &crossbeam_channel::Sender<(u64, Vec<(u64, u64)>)>,
) -> Result<(), PartitionError> {
    const BATCH: usize = 4096;
    let mut batch = Vec::with_capacity(BATCH);
    match source.format {
        TabularFormat::Csv => {
            let mut scanner = CsvScanner::open(&source.path, &[], IO_BUFFER_BYTES)?;
            while let Some(range) = scanner.next_record()? {
                batch.push(range);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if tx.send((scanner.header_end, full)).is_err() {
                        return Ok(());
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send((scanner.header_end, batch));
            }
        }
        TabularFormat::JsonLines => {
            let mut stopped = false;
            scan_jsonl_lines(&source.path, IO_BUFFER_BYTES, |range| {
                if stopped {
                    return;
                }
                batch.push(range);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    stopped = tx.send((0, full)).is_err();
                }
            })?;
            if !batch.is_empty() && !stopped {
                let _ = tx.send((0, batch));
            }
        }
    }
    Ok(())
}

/// Read and drop bytes up to `to`.
fn skip(
    reader: &mut impl Read,
    pos: &mut u64,
    to: u64,
    path: &std::path::Path,
) -> Result<(), PartitionError> {
    if to > *pos {
        let n = std::io::copy(&mut reader.take(to - *pos), &mut std::io::sink())
            .map_err(|e| io_error(path, e))?;
        *pos += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
