//! Where finished mini-batches are kept until the output is gathered: the step key's
//! progress log (resume after a crash), or, for an `incremental` step, the store's unit memo
//! (each mini-batch under its own key: the resume mechanism and the reuse across input
//! changes at once).

use super::collect::files_under;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use stepgraph_engine::relpath;
use stepgraph_engine::{
    now_unix_ms, ObjectRef, ProgressLog, ProgressRecord, StepError, UnitRecord, UnitWriter,
};

/// A finished mini-batch's result, where it is kept.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    /// In the progress log.
    Log(ProgressRecord),
    /// In the unit memo: its rows object (none for no rows), the files it wrote
    /// (`files/<relative path>` -> object; a summary_only step's) and metadata.
    Unit {
        rows: Option<ObjectRef>,
        files: BTreeMap<String, ObjectRef>,
        meta: Value,
    },
}

impl Stored {
    /// What the step recorded with it (counts, columns).
    pub(crate) fn meta(&self) -> &Value {
        match self {
            Stored::Log(rec) => &rec.meta,
            Stored::Unit { meta, .. } => meta,
        }
    }

    /// A memoised mini-batch, as kept in the unit memo.
    pub(crate) fn of_unit(rec: &UnitRecord) -> Stored {
        Stored::Unit {
            rows: rec.objects.get(ROWS).cloned(),
            files: files_of(&rec.objects),
            meta: rec.meta.clone(),
        }
    }

    /// The files a mini-batch wrote (an incremental summary_only step's), by stored name.
    pub(crate) fn files(&self) -> Option<&BTreeMap<String, ObjectRef>> {
        match self {
            Stored::Log(_) => None,
            Stored::Unit { files, .. } => Some(files),
        }
    }
}

/// The name of a unit's rows object.
const ROWS: &str = "rows";

/// The prefix of the names of a unit's files (`files/<relative path, relpath-encoded>`).
pub(crate) const FILES: &str = "files/";

/// A unit's files among its objects.
fn files_of(objects: &BTreeMap<String, ObjectRef>) -> BTreeMap<String, ObjectRef> {
    objects
        .iter()
        .filter(|(name, _)| name.starts_with(FILES))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The unit memo of one incremental step's execution.
pub(crate) struct Memo<'s> {
    writer: UnitWriter<'s>,
    keys: Vec<String>,
    pipeline: String,
    step: String,
    /// Each mini-batch's input files as they were when its key was computed.
    inputs: Vec<Vec<(PathBuf, Option<FileStat>)>>,
    /// The files taken as mini-batches' output, as they were when copied into the store.
    copied: Vec<(PathBuf, Option<FileStat>)>,
    /// What each mini-batch run by this execution produced, by index.
    produced: BTreeMap<u64, Stored>,
}

/// What tells a file changed: size, modification time, inode.
pub(crate) type FileStat = (u64, i64, i64, u64);

/// `path`'s [`FileStat`], `None` when it cannot be read.
pub(crate) fn file_stat(path: &Path) -> Option<FileStat> {
    use std::os::unix::fs::MetadataExt;
    fs_err::metadata(path)
        .ok()
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

impl<'s> Memo<'s> {
    /// Records go through `writer`, mini-batch `i` under `keys[i]`; `inputs[i]`: the files
    /// mini-batch `i` reads, as they were when `keys[i]` was computed.
    pub(crate) fn new(
        writer: UnitWriter<'s>,
        keys: Vec<String>,
        inputs: Vec<Vec<(PathBuf, Option<FileStat>)>>,
        pipeline: &str,
        step: &str,
    ) -> Self {
        Memo {
            writer,
            keys,
            pipeline: pipeline.to_string(),
            step: step.to_string(),
            inputs,
            copied: Vec::new(),
            produced: BTreeMap::new(),
        }
    }

    /// What mini-batch `index` produced in this execution, if it ran and succeeded.
    pub(crate) fn produced(&self, index: u64) -> Option<&Stored> {
        self.produced.get(&index)
    }

    /// Whether mini-batch `index`'s input files are still as they were when its key was
    /// computed (a result computed from changed inputs must not be memoised under it).
    fn inputs_unchanged(&self, index: u64) -> bool {
        self.inputs
            .get(index as usize)
            .is_none_or(|files| files.iter().all(|(p, st)| file_stat(p) == *st))
    }

    /// Check that no file taken as a mini-batch's output changed after it was copied into
    /// the store (a file an entry kept open across mini-batches, e.g. a log opened in
    /// `init()`, cannot be told apart by mini-batch).
    pub(crate) fn check_copied(&self) -> Result<(), StepError> {
        for (path, st) in &self.copied {
            if file_stat(path) != *st {
                let name = path
                    .file_name()
                    .map(|n| crate::process::escape_controls(&n.to_string_lossy()))
                    .unwrap_or_default();
                return Err(StepError::new(format!(
                    "{name} was still written after the run() call that made it returned (a file kept open across mini-batches?): an incremental summary_only entry must write and close its files within run()"
                )));
            }
        }
        Ok(())
    }
}

/// Where the step commits finished mini-batches.
pub(crate) enum Results<'s> {
    /// The step key's progress log.
    Log(ProgressLog<'s>),
    /// The unit memo (incremental steps).
    Memo(Memo<'s>),
}

impl Results<'_> {
    /// Keep mini-batch `index`'s rows and metadata, and (an incremental `summary_only` step)
    /// the files it wrote, in the folder `files`, which is consumed; durable only after
    /// [`Results::commit`].
    pub(crate) fn append(
        &mut self,
        index: u64,
        meta: Value,
        rows: &[u8],
        files: Option<&Path>,
    ) -> Result<Stored, StepError> {
        match self {
            Results::Log(log) => Ok(Stored::Log(log.append(index, meta, rows)?)),
            Results::Memo(m) => {
                let Some(key) = m.keys.get(index as usize) else {
                    return Err(StepError::new(format!("mini-batch {index} has no key")));
                };
                let rows = if rows.is_empty() {
                    None
                } else {
                    Some(m.writer.put_bytes(rows)?)
                };
                let mut objects: BTreeMap<String, ObjectRef> =
                    rows.iter().map(|o| (ROWS.to_string(), o.clone())).collect();
                if let Some(dir) = files {
                    let found = files_under(dir).map_err(|e| {
                        StepError::with_source(
                            format!("collecting the files mini-batch {index} wrote"),
                            e,
                        )
                    })?;
                    for (rel, path) in found {
                        let before = file_stat(&path);
                        let obj = m.writer.put_file(&path)?;
                        objects.insert(format!("{FILES}{}", relpath::encode(&rel)), obj);
                        // Kept (in staging) until the step ends, to see that it did not change.
                        m.copied.push((path, before));
                    }
                }
                let stored = Stored::Unit {
                    rows: rows.clone(),
                    files: files_of(&objects),
                    meta: meta.clone(),
                };
                m.produced.insert(index, stored.clone());
                if !m.inputs_unchanged(index) {
                    // Its inputs changed while it ran: the result is used for this run's
                    // output (the engine fails the step for the change) but not memoised.
                    return Ok(stored);
                }
                m.writer.add(UnitRecord {
                    key: key.clone(),
                    pipeline: m.pipeline.clone(),
                    step: m.step.clone(),
                    meta,
                    objects,
                    created_unix_ms: now_unix_ms(),
                });
                Ok(stored)
            }
        }
    }

    /// Results kept and not yet committed.
    pub(crate) fn pending(&self) -> usize {
        match self {
            Results::Log(log) => log.pending(),
            Results::Memo(m) => m.writer.pending(),
        }
    }

    /// Make every kept result durable (in groups: one fsync or flush for many).
    pub(crate) fn commit(&mut self) -> Result<(), StepError> {
        match self {
            Results::Log(log) => Ok(log.commit()?),
            Results::Memo(m) => Ok(m.writer.commit()?),
        }
    }

    /// The rows of a kept result, checked against their hash.
    pub(crate) fn read(&self, stored: &Stored) -> Result<Vec<u8>, StepError> {
        match (self, stored) {
            (Results::Log(log), Stored::Log(rec)) => Ok(log.read(rec)?),
            (Results::Memo(m), Stored::Unit { rows, .. }) => match rows {
                Some(obj) => Ok(m.writer.read_object(obj)?),
                None => Ok(Vec::new()),
            },
            _ => Err(StepError::new(
                "a mini-batch result was read from the wrong place",
            )),
        }
    }

    /// The unit keys of the memo (empty for a progress log).
    pub(crate) fn unit_keys(&self) -> &[String] {
        match self {
            Results::Log(_) => &[],
            Results::Memo(m) => &m.keys,
        }
    }
}
