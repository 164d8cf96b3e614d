//! The spec's `datasets`: file, tabular and reference datasets, by their `"type"`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use stepgraph_engine::check_data_name;
use stepgraph_engine::{DataReference, DataSource, FileDataset, TabularDataset, TabularFormat};

use super::json::{self, OneOrMany, Problem, Seg};
use super::{tagged, Context};

/// A dataset, by its `"type"` (read first, so errors inside name their field).
#[derive(Debug)]
enum DatasetSpec {
    File(FileDatasetSpec),
    Tabular(TabularDatasetSpec),
    Reference(ReferenceDatasetSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDatasetSpec {
    path: String,
    pattern: Option<String>,
    partition_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TabularDatasetSpec {
    path: OneOrMany,
    format: Option<String>,
    pattern: Option<String>,
    partition_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceDatasetSpec {
    path: String,
}

/// Every dataset of the spec into `names`; a dataset with an error is reported and marked
/// broken.
pub(super) fn collect(
    cx: &mut Context<'_>,
    datasets: &BTreeMap<String, Value>,
    errors: &mut Vec<String>,
) {
    let file = cx.file;
    for (name, raw) in datasets {
        // The name becomes a port and a folder name: it must be one safe path component.
        if let Some(reason) = check_data_name(name) {
            errors.push(format!(
                "{file}: dataset {name:?}: the name is not valid: {reason}"
            ));
            cx.names.broken.insert(name.clone());
            continue;
        }
        let source = dataset_spec(file, cx.root, name, raw).and_then(|d| d.into_source(cx, name));
        match source {
            Ok(source) => {
                cx.names.datasets.insert(name.clone(), source);
            }
            Err(e) => {
                errors.push(e.to_string());
                cx.names.broken.insert(name.clone());
            }
        }
    }
}

impl DatasetSpec {
    /// The dataset `name`, its paths resolved against the spec's folder.
    fn into_source(self, cx: &Context<'_>, name: &str) -> Result<DataSource, Problem> {
        Ok(match self {
            DatasetSpec::File(FileDatasetSpec {
                path,
                pattern,
                partition_format,
            }) => {
                check_partition_format(cx.file, name, partition_format.as_deref())?;
                let mut ds = FileDataset::from_files(name, cx.resolve(&path));
                if let Some(p) = pattern {
                    ds = ds.with_pattern(p);
                }
                if let Some(f) = partition_format {
                    ds = ds.with_partition_format(f);
                }
                ds.into()
            }
            DatasetSpec::Tabular(TabularDatasetSpec {
                path,
                format,
                pattern,
                partition_format,
            }) => {
                check_partition_format(cx.file, name, partition_format.as_deref())?;
                let paths: Vec<PathBuf> = match path {
                    OneOrMany::One(p) => vec![cx.resolve(&p)],
                    OneOrMany::Many(ps) => ps.iter().map(|p| cx.resolve(p)).collect(),
                };
                let told_by = match &pattern {
                    Some(p) => vec![PathBuf::from(p)],
                    None => paths.clone(),
                };
                let format = tabular_format(format.as_deref(), &told_by).map_err(|UnknownFormat(other)| {
                    Problem(format!(
                        "{}: dataset {name:?}: field \"format\": expected \"csv\" or \"jsonl\", got the string {other:?}",
                        cx.file
                    ))
                })?;
                TabularDataset {
                    name: name.to_string(),
                    paths,
                    format,
                    pattern,
                    partition_format,
                }
                .into()
            }
            DatasetSpec::Reference(ReferenceDatasetSpec { path }) => {
                DataReference::new(name, cx.resolve(&path)).into()
            }
        })
    }
}

/// A `partition_format` that does not parse is an error naming the dataset and the field.
fn check_partition_format(file: &str, name: &str, format: Option<&str>) -> Result<(), Problem> {
    match format.map(crate::parallel_run::partition::PartitionFormat::parse) {
        Some(Err(e)) => Err(Problem(format!(
            "{file}: dataset {name:?}: field \"partition_format\": {}",
            e.reason
        ))),
        _ => Ok(()),
    }
}

/// A tabular format that is neither `csv` nor `jsonl`.
#[derive(Debug, thiserror::Error)]
#[error("unknown tabular format {0:?}")]
struct UnknownFormat(String);

/// The format given, or told by the extension (`.jsonl`, `.json`; CSV otherwise) of the
/// `pattern` or, without one, of the first path. An unknown format comes back as the error.
fn tabular_format(format: Option<&str>, paths: &[PathBuf]) -> Result<TabularFormat, UnknownFormat> {
    match format {
        Some("csv") => Ok(TabularFormat::Csv),
        Some("jsonl") => Ok(TabularFormat::JsonLines),
        None if paths
            .first()
            .and_then(|p| p.extension())
            .is_some_and(|e| e == "jsonl" || e == "json") =>
        {
            Ok(TabularFormat::JsonLines)
        }
        None => Ok(TabularFormat::Csv),
        Some(other) => Err(UnknownFormat(other.to_string())),
    }
}

/// Dataset `name` of the spec `root`.
fn dataset_spec(file: &str, root: &Value, name: &str, raw: &Value) -> Result<DatasetSpec, Problem> {
    let base = [Seg::Key("datasets".into()), Seg::Key(name.into())];
    let (kind, rest) = tagged(
        file,
        root,
        &base,
        raw,
        &["file", "tabular", "reference"],
        r#"{"type": "file", "path": "data"}"#,
    )?;
    match kind {
        0 => json::typed(file, root, &base, &rest).map(DatasetSpec::File),
        1 => json::typed(file, root, &base, &rest).map(DatasetSpec::Tabular),
        _ => json::typed(file, root, &base, &rest).map(DatasetSpec::Reference),
    }
}
