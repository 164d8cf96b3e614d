//! Incremental steps: each mini-batch's own key, so a rerun over changed inputs finds the
//! mini-batches whose content it has already seen in the store's unit memo.
//!
//! A mini-batch key is blake3 over
//! - the step's fingerprint components other than its main inputs (`inputs.*`): code,
//!   config, arguments, environment, side inputs, models, params — anything there changes
//!   every mini-batch's key;
//! - the mini-batch's content: for files, each file's input port, name relative to its
//!   dataset and content hash; for rows, each segment's content digest (format, header and
//!   record bytes: `partition::cdc::ContentHasher`, computed while partitioning when the
//!   rows were cut by size); and in both cases the partition values and
//!   `partition_key_value` the entry sees.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use rayon::prelude::*;
use stepgraph_engine::{
    Fingerprint, PlanContext, Preimage, ResolvedInput, StepError, UnitEstimate,
};

use super::partition::cdc::segment_digest;
use super::partition::MiniBatchSpec;
use super::step::{input_port, ParallelRunStep};

/// Version tag of the key layout below (changing it reruns every memoised mini-batch).
const KEY_TAG: &[u8] = b"stepgraph-mini-batch-v1\n";

/// The hasher holding everything a mini-batch key shares with the step's other mini-batches.
fn base(fingerprint: &Fingerprint) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    h.update(KEY_TAG);
    for (name, c) in &fingerprint.components {
        if name.starts_with("inputs.") {
            continue;
        }
        h.update(name.as_bytes());
        h.update(b"=");
        h.update(c.hash.as_bytes());
        h.update(b"\n");
    }
    h
}

/// Where a file of the main inputs comes from: its port, relative name and content hash.
type FileIdentity = (String, String, String);

/// Each main-input file's identity, from the fingerprint's manifests.
fn file_identities(
    step: &ParallelRunStep,
    inputs: &BTreeMap<String, ResolvedInput>,
    fingerprint: &Fingerprint,
) -> Result<HashMap<PathBuf, FileIdentity>, StepError> {
    let mut out = HashMap::new();
    for i in 0..step.inputs.len() {
        let port = input_port(i);
        let Some(input) = inputs.get(&port) else {
            return Err(StepError::new(format!("input {port:?} was not resolved")));
        };
        let manifest = match fingerprint
            .components
            .get(&format!("inputs.{port}"))
            .map(|c| &c.preimage)
        {
            Some(Preimage::Manifest(m)) => m,
            _ => {
                return Err(StepError::new(format!(
                    "input {port:?} has no manifest in the fingerprint"
                )))
            }
        };
        for f in input.files() {
            let Some(hash) = manifest.get(&f.relative) else {
                return Err(StepError::new(format!(
                    "{}: not in the fingerprint of input {port:?}",
                    f.path.display()
                )));
            };
            out.insert(
                f.path.clone(),
                (port.clone(), f.relative.clone(), hash.clone()),
            );
        }
    }
    Ok(out)
}

/// The key of every mini-batch of `specs`, in order (rows are read and hashed in parallel).
///
/// # Errors
/// A file of the inputs cannot be read, or is not in the fingerprint.
pub(crate) fn mini_batch_keys(
    step: &ParallelRunStep,
    inputs: &BTreeMap<String, ResolvedInput>,
    fingerprint: &Fingerprint,
    specs: &[MiniBatchSpec],
    digests: Option<&[blake3::Hash]>,
) -> Result<Vec<String>, StepError> {
    let base = base(fingerprint);
    let files = file_identities(step, inputs, fingerprint)?;
    specs
        .par_iter()
        .enumerate()
        .map(|(i, spec)| key_of(&base, &files, spec, digests.and_then(|d| d.get(i))))
        .collect()
}

/// Mini-batch `spec`'s key; `digest`: its rows' content digest when partitioning computed it
/// (one segment), else the segments are read.
fn key_of(
    base: &blake3::Hasher,
    files: &HashMap<PathBuf, FileIdentity>,
    spec: &MiniBatchSpec,
    digest: Option<&blake3::Hash>,
) -> Result<String, StepError> {
    let mut h = base.clone();
    let field = |h: &mut blake3::Hasher, bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    let (partition_key_value, partitions) = match spec {
        MiniBatchSpec::Files {
            files: paths,
            partition_key_value,
            partitions,
        } => {
            h.update(b"files\n");
            for p in paths {
                let Some((port, relative, hash)) = files.get(p) else {
                    return Err(StepError::new(format!(
                        "{}: not a file of the step's inputs",
                        p.display()
                    )));
                };
                field(&mut h, port.as_bytes());
                field(&mut h, relative.as_bytes());
                field(&mut h, hash.as_bytes());
            }
            (partition_key_value, partitions)
        }
        MiniBatchSpec::Tabular {
            segments,
            partition_key_value,
            partitions,
            ..
        } => {
            h.update(b"rows\n");
            match (digest, segments.as_slice()) {
                (Some(d), [_]) => {
                    h.update(d.as_bytes());
                }
                _ => {
                    for s in segments {
                        let d = segment_digest(s)
                            .map_err(|e| StepError::with_source("reading rows", e))?;
                        h.update(d.as_bytes());
                    }
                }
            }
            (partition_key_value, partitions)
        }
    };
    let values = serde_json::json!({
        "partition_key_value": partition_key_value,
        "partitions": partitions,
    });
    field(&mut h, stepgraph_engine::canonical_json(&values).as_bytes());
    Ok(h.finalize().to_hex().to_string())
}

/// How many of an incremental step's mini-batches the unit memo already holds for these
/// inputs (`explain`, `run --dry-run`).
///
/// # Errors
/// The inputs cannot be partitioned or read.
pub(crate) fn estimate(
    step: &ParallelRunStep,
    ctx: &PlanContext<'_>,
) -> Result<UnitEstimate, StepError> {
    let (specs, digests) = super::execute::partition_inputs(step, ctx.inputs)?;
    let keys = mini_batch_keys(
        step,
        ctx.inputs,
        ctx.fingerprint,
        &specs,
        digests.as_deref(),
    )?;
    let mut reused = 0;
    for k in &keys {
        if ctx.has_unit(k)? {
            reused += 1;
        }
    }
    Ok(UnitEstimate {
        unit: super::UNIT.to_string(),
        total: keys.len() as u64,
        reused,
    })
}
