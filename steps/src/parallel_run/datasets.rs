//! What the step reads of its datasets beyond their files: Azure's `partition_format`
//! (values from each file's path), checked at build, hashed into the fingerprint, and used
//! to cut mini-batches by `partition_keys` and to tell the entry each file's values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use stepgraph_engine::{DataSource, DatasetFile, TabularFormat};

use super::partition::{FormatError, MiniBatchSpec, PartitionFormat, PartitionValues};
use super::step::input_port;

/// Why the inputs' `partition_format` or `partition_keys` do not fit; every variant names
/// the dataset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DatasetError {
    /// A `partition_format` that does not parse.
    #[error("dataset {dataset:?}: {}", .source.reason)]
    Format {
        /// The dataset.
        dataset: String,
        /// The parser's error (its `reason` is shown: the format is named by the caller's
        /// field).
        source: FormatError,
    },
    /// `partition_keys` on a dataset with no `partition_format`.
    #[error(
        "partition_keys on a {kind} dataset need its partition_format: dataset {dataset:?} has \
         none (e.g. \"partition_format\": \"{{{key}}}/{{name}}.csv\")"
    )]
    NoFormat {
        /// The dataset's kind (`files`, `tabular`).
        kind: &'static str,
        /// The dataset.
        dataset: String,
        /// The first key, for the example.
        key: String,
    },
    /// A key that is not a field of a dataset's `partition_format`.
    #[error(
        "key {key:?} is not in the partition_format {format:?} of dataset {dataset:?} (its \
         keys: {})",
        keys.join(", ")
    )]
    KeyNotInFormat {
        /// The key.
        key: String,
        /// The format.
        format: String,
        /// The dataset.
        dataset: String,
        /// The format's keys.
        keys: Vec<String>,
    },
    /// A file whose path does not match its dataset's `partition_format`, where its values
    /// cut mini-batches.
    #[error(
        "{file} in dataset {dataset:?} does not match its partition_format {format:?}, so it \
         has no partition_keys values (leave such files out with a \"pattern\")"
    )]
    NoMatch {
        /// The file, relative to the dataset.
        file: String,
        /// The dataset.
        dataset: String,
        /// The format.
        format: String,
    },
    /// A `partition_format` field that is also a column of a tabular file: the virtual
    /// column would hide the file's own (or the reverse).
    #[error(
        "partition_format field {column:?} of dataset {dataset:?} is also a column of {file}: \
         rename the field in the partition_format"
    )]
    ColumnClash {
        /// The field and column name.
        column: String,
        /// The dataset.
        dataset: String,
        /// The file, relative to the dataset.
        file: String,
    },
}

/// The column names of a tabular file: a CSV file's header, or the keys of a JSON Lines
/// file's first record; empty when they cannot be read (reading the rows reports that).
fn columns_of(path: &Path, format: TabularFormat) -> Vec<String> {
    use std::io::BufRead;
    let Ok(file) = fs_err::File::open(path) else {
        return Vec::new();
    };
    match format {
        TabularFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(file);
            reader
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|c| c.trim_start_matches('\u{feff}').to_string())
                        .collect()
                })
                .unwrap_or_default()
        }
        TabularFormat::JsonLines => std::io::BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .find(|l| !l.trim().is_empty())
            .and_then(|l| serde_json::from_str::<serde_json::Map<String, Value>>(&l).ok())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default(),
    }
}

/// A tabular input's files hold no column named as a field of its `partition_format`.
///
/// # Errors
/// [`DatasetError::ColumnClash`] naming the first such column and file.
pub(super) fn check_columns(
    source: &DataSource,
    format: Option<&PartitionFormat>,
    tabular_format: TabularFormat,
    files: &[DatasetFile],
) -> Result<(), DatasetError> {
    let Some(format) = format else {
        return Ok(());
    };
    for f in files {
        let columns = columns_of(&f.path, tabular_format);
        if let Some(column) = format.keys().iter().find(|k| columns.contains(k)) {
            return Err(DatasetError::ColumnClash {
                column: column.clone(),
                dataset: source.name().to_string(),
                file: relative_to_dataset(source, f),
            });
        }
    }
    Ok(())
}

/// A main input's `partition_format`, if it has one.
fn format_of(source: &DataSource) -> Option<&str> {
    match source {
        DataSource::Files(f) => f.partition_format.as_deref(),
        DataSource::Tabular(t) => t.partition_format.as_deref(),
        DataSource::Pipeline(_) | DataSource::Reference(_) => None,
    }
}

/// Each main input's parsed `partition_format`.
///
/// # Errors
/// [`DatasetError::Format`], naming the dataset whose format does not parse.
pub(super) fn partition_formats(
    inputs: &[DataSource],
) -> Result<Vec<Option<PartitionFormat>>, DatasetError> {
    inputs
        .iter()
        .map(|s| {
            format_of(s)
                .map(|f| {
                    PartitionFormat::parse(f).map_err(|source| DatasetError::Format {
                        dataset: s.name().to_string(),
                        source,
                    })
                })
                .transpose()
        })
        .collect()
}

/// `partition_keys` fit the inputs: on files, every key is a field of every input's
/// `partition_format`; on tabular inputs, the keys are either all columns (no key in any
/// format) or all fields of every input's format.
///
/// # Errors
/// [`DatasetError::NoFormat`] or [`DatasetError::KeyNotInFormat`].
pub(super) fn check_partition_keys(
    inputs: &[DataSource],
    formats: &[Option<PartitionFormat>],
    keys: &[String],
    tabular: bool,
) -> Result<(), DatasetError> {
    let in_format =
        |f: &Option<PartitionFormat>, k: &String| f.as_ref().is_some_and(|f| f.keys().contains(k));
    if tabular && !formats.iter().any(|f| keys.iter().any(|k| in_format(f, k))) {
        return Ok(());
    }
    for (source, format) in inputs.iter().zip(formats) {
        let Some(f) = format else {
            return Err(DatasetError::NoFormat {
                kind: source.kind(),
                dataset: source.name().to_string(),
                key: keys.first().map_or("key", String::as_str).to_string(),
            });
        };
        if let Some(k) = keys.iter().find(|k| !f.keys().contains(k)) {
            return Err(DatasetError::KeyNotInFormat {
                key: k.clone(),
                format: f.to_string(),
                dataset: source.name().to_string(),
                keys: f.keys().to_vec(),
            });
        }
    }
    Ok(())
}

/// The fingerprint part for the inputs' `partition_format` (and a tabular `pattern`), keyed
/// by port; `None` when no input has either.
pub(super) fn fingerprint(inputs: &[DataSource]) -> Option<Value> {
    let mut out = serde_json::Map::new();
    for (i, s) in inputs.iter().enumerate() {
        let pattern = match s {
            DataSource::Tabular(t) => t.pattern.as_deref(),
            _ => None,
        };
        let format = format_of(s);
        if pattern.is_some() || format.is_some() {
            out.insert(
                input_port(i),
                json!({"partition_format": format, "pattern": pattern}),
            );
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

/// The path of `file` relative to the dataset `source` it came from (`/`-separated), which
/// the `partition_format` is matched against.
pub(super) fn relative_to_dataset(source: &DataSource, file: &DatasetFile) -> String {
    let roots: Vec<PathBuf> = match source {
        DataSource::Tabular(t) => t.paths.clone(),
        DataSource::Files(f) => vec![f.path.clone()],
        DataSource::Pipeline(_) | DataSource::Reference(_) => Vec::new(),
    };
    for root in roots {
        let Ok(root) = std::path::absolute(&root) else {
            continue;
        };
        if root == file.path {
            return file_name(&file.path);
        }
        if let Ok(rel) = file.path.strip_prefix(&root) {
            return stepgraph_engine::relpath::encode(rel);
        }
    }
    file.relative.clone()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| stepgraph_engine::relpath::encode(Path::new(n)))
        .unwrap_or_default()
}

/// The partition values of each file of input `port` (empty maps when it has no format).
///
/// # Errors
/// With `strict` (the values cut mini-batches), a file whose path does not match the format:
/// [`DatasetError::NoMatch`].
pub(super) fn values_of(
    source: &DataSource,
    format: Option<&PartitionFormat>,
    files: &[DatasetFile],
    strict: bool,
) -> Result<Vec<PartitionValues>, DatasetError> {
    let Some(format) = format else {
        return Ok(vec![PartitionValues::default(); files.len()]);
    };
    files
        .iter()
        .map(|f| {
            let rel = relative_to_dataset(source, f);
            match format.values(&rel) {
                Some(v) => Ok(PartitionValues(
                    v.0.into_iter().map(|(k, v)| (k, name_text(v))).collect(),
                )),
                None if strict => Err(DatasetError::NoMatch {
                    file: rel,
                    dataset: source.name().to_string(),
                    format: format.to_string(),
                }),
                None => Ok(PartitionValues::default()),
            }
        })
        .collect()
}

/// A partition value as the file name's text: the format is matched against the path's
/// reversible encoding ([`stepgraph_engine::relpath`]), where a backslash is doubled; a value
/// that is not UTF-8 keeps its `\xNN` escapes.
fn name_text(value: String) -> String {
    if !value.contains('\\') {
        return value;
    }
    use std::os::unix::ffi::OsStringExt;
    match stepgraph_engine::relpath::decode(&value).map(|p| p.into_os_string().into_vec()) {
        Ok(bytes) => String::from_utf8(bytes).unwrap_or(value),
        Err(_) => value,
    }
}

/// One group of [`group_by_keys`]: its key values and its items with their values.
pub(super) type Group<T> = (BTreeMap<String, String>, Vec<(T, PartitionValues)>);

/// Group items by their values of `keys`, in order of first appearance; items keep their
/// order within a group.
pub(super) fn group_by_keys<T: Clone>(
    items: &[(T, PartitionValues)],
    keys: &[String],
) -> Vec<Group<T>> {
    let mut groups: Vec<Group<T>> = Vec::new();
    let mut index: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (item, values) in items {
        let key: Vec<String> = keys
            .iter()
            .map(|k| values.get(k).unwrap_or_default().to_string())
            .collect();
        let at = *index.entry(key.clone()).or_insert_with(|| {
            let kv = keys.iter().cloned().zip(key).collect();
            groups.push((kv, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push((item.clone(), values.clone()));
    }
    groups
}

/// One files mini-batch per key combination, in order of first appearance.
pub(super) fn partition_files_by_keys(
    files: &[(PathBuf, PartitionValues)],
    keys: &[String],
) -> Vec<MiniBatchSpec> {
    group_by_keys(files, keys)
        .into_iter()
        .map(|(kv, members)| {
            let (files, partitions) = members.into_iter().unzip();
            MiniBatchSpec::Files {
                files,
                partition_key_value: Some(kv),
                partitions,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn pv(p: &[(&str, &str)]) -> PartitionValues {
        PartitionValues(
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn partition_values_are_the_names_text_not_their_path_encoding(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir()?;
        fs_err::create_dir_all(dir.path().join("ana"))?;
        fs_err::write(dir.path().join("ana/a\\b.wav"), "x")?;
        let bytes = dir
            .path()
            .join(std::ffi::OsStr::from_bytes(b"ana/caf\xe9.wav"));
        fs_err::write(bytes, "y")?;
        let ds = stepgraph_engine::FileDataset::from_files("songs", dir.path())
            .with_partition_format("{user}/{name}.wav");
        let files = ds.list()?;
        let source = DataSource::Files(ds);
        let format = PartitionFormat::parse("{user}/{name}.wav")?;
        let values = values_of(&source, Some(&format), &files, true)?;
        let names: Vec<&str> = values.iter().filter_map(|v| v.get("name")).collect();
        // A backslash is the name's own; a byte that is not UTF-8 keeps its escape.
        assert_eq!(names, ["a\\b", "caf\\xe9"]);
        Ok(())
    }

    #[test]
    fn files_group_by_keys_in_first_appearance_order() {
        let files = vec![
            (
                PathBuf::from("b/x/rock.wav"),
                pv(&[("user", "b"), ("genres", "rock")]),
            ),
            (
                PathBuf::from("a/x/jazz.wav"),
                pv(&[("user", "a"), ("genres", "jazz")]),
            ),
            (
                PathBuf::from("b/y/rock.wav"),
                pv(&[("user", "b"), ("genres", "rock")]),
            ),
        ];
        let keys = vec!["user".to_string(), "genres".to_string()];
        let batches = partition_files_by_keys(&files, &keys);
        type Batch = (Vec<PathBuf>, Option<BTreeMap<String, String>>);
        let got: Vec<Batch> = batches
            .into_iter()
            .map(|b| match b {
                MiniBatchSpec::Files {
                    files,
                    partition_key_value,
                    ..
                } => (files, partition_key_value),
                MiniBatchSpec::Tabular { .. } => (Vec::new(), None),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    vec![PathBuf::from("b/x/rock.wav"), PathBuf::from("b/y/rock.wav")],
                    Some(kv(&[("user", "b"), ("genres", "rock")]))
                ),
                (
                    vec![PathBuf::from("a/x/jazz.wav")],
                    Some(kv(&[("user", "a"), ("genres", "jazz")]))
                ),
            ]
        );
    }

    #[test]
    fn keys_must_be_in_every_files_format() {
        let with = DataSource::Files(
            stepgraph_engine::FileDataset::from_files("songs", "d")
                .with_partition_format("{user}/{season}/{genres}.wav"),
        );
        let without = DataSource::Files(stepgraph_engine::FileDataset::from_files("raw", "d"));
        let keys = vec!["user".to_string(), "genres".to_string()];
        let ok = partition_formats(std::slice::from_ref(&with)).unwrap_or_default();
        assert_eq!(
            check_partition_keys(std::slice::from_ref(&with), &ok, &keys, false),
            Ok(())
        );
        let bad_key = vec!["region".to_string()];
        let e = check_partition_keys(&[with], &ok, &bad_key, false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("\"region\"") && e.contains("songs"), "{e}");
        let e = check_partition_keys(&[without], &[None], &keys, false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("partition_format") && e.contains("\"raw\""),
            "{e}"
        );
    }
}
