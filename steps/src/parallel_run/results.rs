//! Where finished mini-batches are kept until the output is gathered: the step key's
//! progress log (resume after a crash), or, for an `incremental` step, the store's unit memo
//! (each mini-batch under its own key: the resume mechanism and the reuse across input
//! changes at once).

use super::collect::files_under;
use std::collections::BTreeMap;
use std::path::Path;

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
    /// In the unit memo: its rows object (none for no rows) and metadata.
    Unit {
        rows: Option<ObjectRef>,
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
            meta: rec.meta.clone(),
        }
    }
}

/// The name of a unit's rows object.
const ROWS: &str = "rows";

/// The prefix of the names of a unit's files (`files/<relative path, relpath-encoded>`).
pub(crate) const FILES: &str = "files/";

/// The unit memo of one incremental step's execution.
pub(crate) struct Memo<'s> {
    writer: UnitWriter<'s>,
    keys: Vec<String>,
    pipeline: String,
    step: String,
}

impl<'s> Memo<'s> {
    /// Records go through `writer`, mini-batch `i` under `keys[i]`.
    pub(crate) fn new(
        writer: UnitWriter<'s>,
        keys: Vec<String>,
        pipeline: &str,
        step: &str,
    ) -> Self {
        Memo {
            writer,
            keys,
            pipeline: pipeline.to_string(),
            step: step.to_string(),
        }
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
                        let obj = m.writer.put_file(&path)?;
                        objects.insert(format!("{FILES}{}", relpath::encode(&rel)), obj);
                    }
                    let _ = fs_err::remove_dir_all(dir);
                }
                m.writer.add(UnitRecord {
                    key: key.clone(),
                    pipeline: m.pipeline.clone(),
                    step: m.step.clone(),
                    meta: meta.clone(),
                    objects,
                    created_unix_ms: now_unix_ms(),
                });
                Ok(Stored::Unit { rows, meta })
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
