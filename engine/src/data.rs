//! Data handles that flow between steps: intermediate `PipelineData`, fixed `DataReference`s,
//! `FileDataset`s and `TabularDataset`s, pipeline parameters, and the port bindings that tie them
//! to a step.

use std::path::{Path, PathBuf};

use globset::GlobMatcher;

use crate::error::FilesError;
use crate::store::is_store_dir;
use serde_json::Value;

/// An intermediate output: produced by exactly one step, read by any number of steps.
/// On disk it is a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineData {
    name: String,
}

impl PipelineData {
    /// A handle named `name` (names of data and datasets share one namespace in a pipeline).
    pub fn new(name: impl Into<String>) -> Self {
        PipelineData { name: name.into() }
    }

    /// The data's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A fixed file or directory outside the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataReference {
    /// The reference's name.
    pub name: String,
    /// The file or directory.
    pub path: PathBuf,
}

impl DataReference {
    /// A reference named `name` to `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        DataReference {
            name: name.into(),
            path: path.into(),
        }
    }
}

/// `with_pattern` and `with_partition_format`, the same on both dataset types.
macro_rules! selection_methods {
    ($pattern_doc:literal, $format_doc:literal) => {
        #[doc = $pattern_doc]
        pub fn with_pattern(mut self, pattern: impl Into<String>) -> Self {
            self.pattern = Some(pattern.into());
            self
        }

        #[doc = $format_doc]
        pub fn with_partition_format(mut self, format: impl Into<String>) -> Self {
            self.partition_format = Some(format.into());
            self
        }
    };
}

/// A set of files: a folder (or one file) and a glob over paths relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDataset {
    /// The dataset's name.
    pub name: String,
    /// The folder (or single file).
    pub path: PathBuf,
    /// Glob over relative paths (`**/*.png`, `*/*/*.wav`: `*` stays within one folder,
    /// `**` crosses folders); `None` means every file.
    pub pattern: Option<String>,
    /// Azure's `partition_format` (`{user}/{season}/{genre}.wav`): partition values read from
    /// each file's relative path, for `partition_keys` and the entry. The owning step parses
    /// and checks it.
    pub partition_format: Option<String>,
}

impl FileDataset {
    /// Every file below `path`.
    pub fn from_files(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        FileDataset {
            name: name.into(),
            path: path.into(),
            pattern: None,
            partition_format: None,
        }
    }

    selection_methods!(
        "Only the files whose relative path matches `pattern`.",
        "Azure's `partition_format`: partition values from each file's relative path."
    );

    /// The dataset's files sorted by relative path (`/`-separated).
    ///
    /// # Errors
    /// When the glob is invalid or the folder cannot be read.
    pub fn list(&self) -> Result<Vec<DatasetFile>, FilesError> {
        let matcher = self.pattern.as_deref().map(compile_glob).transpose()?;
        list_files(&self.path, matcher.as_ref())
    }
}

/// The format of a tabular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TabularFormat {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    #[serde(rename = "jsonl")]
    JsonLines,
}

impl TabularFormat {
    /// `csv` or `jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            TabularFormat::Csv => "csv",
            TabularFormat::JsonLines => "jsonl",
        }
    }
}

/// Rows in one or more CSV or JSON Lines files (a folder means every file in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TabularDataset {
    /// The dataset's name.
    pub name: String,
    /// Files or folders, in order.
    pub paths: Vec<PathBuf>,
    /// Their format.
    pub format: TabularFormat,
    /// Glob over the paths of a folder's files relative to that folder (as for
    /// [`FileDataset::pattern`]): other files (a README) are not read. Given files are
    /// always read.
    pub pattern: Option<String>,
    /// Azure's `partition_format`: values read from each file's path relative to its
    /// folder, appended to its rows as columns (Azure's virtual columns).
    pub partition_format: Option<String>,
}

impl TabularDataset {
    /// Azure's `Dataset.Tabular.from_delimited_files`.
    pub fn from_delimited_files(name: impl Into<String>, paths: Vec<PathBuf>) -> Self {
        TabularDataset {
            name: name.into(),
            paths,
            format: TabularFormat::Csv,
            pattern: None,
            partition_format: None,
        }
    }

    /// Azure's `Dataset.Tabular.from_json_lines_files`.
    pub fn from_json_lines_files(name: impl Into<String>, paths: Vec<PathBuf>) -> Self {
        TabularDataset {
            name: name.into(),
            paths,
            format: TabularFormat::JsonLines,
            pattern: None,
            partition_format: None,
        }
    }

    selection_methods!(
        "Only the files of a folder whose path relative to it matches `pattern`.",
        "Azure's `partition_format`: values from each file's path, appended as columns."
    );

    /// The dataset's files in order: each given file, and each folder's files sorted.
    ///
    /// # Errors
    /// When a path is missing or unreadable.
    pub fn list(&self) -> Result<Vec<DatasetFile>, FilesError> {
        let matcher = self.pattern.as_deref().map(compile_glob).transpose()?;
        let mut out = Vec::new();
        for (i, p) in self.paths.iter().enumerate() {
            let mut files = list_files(p, matcher.as_ref())?;
            if p.is_dir() {
                let base = p.file_name().map(|n| crate::relpath::encode(Path::new(n)));
                if let Some(b) = &base {
                    for f in &mut files {
                        f.relative = format!("{b}/{}", f.relative);
                    }
                }
            }
            // Rows are read in the order of `paths`, and two paths may share a name
            // (`x/d.csv`, `y/d.csv`) or repeat: with several paths, each file's name carries its
            // position, so order, repeats and namesakes are all in the fingerprint.
            if self.paths.len() > 1 {
                for f in &mut files {
                    f.relative = format!("{i:04}/{}", f.relative);
                }
            }
            out.extend(files);
        }
        Ok(out)
    }
}

/// One file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFile {
    /// Path relative to the dataset root, `/`-separated (the file name for a single file), in
    /// the exact, reversible encoding of [`crate::relpath`] (bytes that are not UTF-8 as `\xNN`).
    pub relative: String,
    /// Full path.
    pub path: PathBuf,
}

/// `*` and `?` stay within one folder (`*/*/*.wav` is three levels deep), `**` crosses
/// folders (`**/*.jpg` also matches `a.jpg`), as in Azure's path globs.
fn compile_glob(pattern: &str) -> Result<GlobMatcher, FilesError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| FilesError::Pattern {
            what: "invalid pattern",
            pattern: pattern.to_string(),
            source: e.into(),
        })
}

/// Files below `root` (or `root` itself when it is a file), sorted by relative path.
pub(crate) fn list_files(
    root: &Path,
    matcher: Option<&GlobMatcher>,
) -> Result<Vec<DatasetFile>, FilesError> {
    // Absolute, so steps that run elsewhere (workers in their own folder) can open them.
    let root = &std::path::absolute(root).map_err(|e| FilesError::Path {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    let meta = match fs_err::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FilesError::Missing {
                path: root.to_path_buf(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    if meta.is_dir() && is_store_dir(root) {
        return Err(FilesError::IsAStore {
            path: root.to_path_buf(),
        });
    }
    if meta.is_file() {
        let name = root
            .file_name()
            .map(|n| crate::relpath::encode(Path::new(n)))
            .unwrap_or_default();
        return Ok(vec![DatasetFile {
            relative: name,
            path: root.to_path_buf(),
        }]);
    }
    let mut out = Vec::new();
    let mut skipped = 0;
    // A store inside the dataset's folder (`path: "."`) is never data: its files change with
    // every run.
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| !(e.depth() > 0 && e.file_type().is_dir() && is_store_dir(e.path())));
    for entry in walker {
        let entry = entry.map_err(|e| FilesError::Path {
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = match entry.path().strip_prefix(root) {
            Ok(r) => r,
            Err(_) => continue,
        };
        // Matched on the exact bytes; kept as an exact, reversible string (never lossy: two
        // names differing only in bytes that are not UTF-8 must stay two files).
        if matcher.is_some_and(|m| !m.is_match(rel)) {
            skipped += 1;
            continue;
        }
        let relative = crate::relpath::encode(rel);
        out.push(DatasetFile {
            relative,
            path: entry.into_path(),
        });
    }
    if let (Some(m), true) = (matcher, out.is_empty()) {
        return Err(FilesError::NoMatch {
            pattern: m.glob().glob().to_string(),
            path: root.to_path_buf(),
            files: skipped,
        });
    }
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}

/// A named value with a default, overridable per run (`--param name=value`).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineParameter {
    /// The parameter's name.
    pub name: String,
    /// Its value when a run does not override it.
    pub default_value: Value,
}

impl PipelineParameter {
    /// A parameter `name` with `default_value`.
    pub fn new(name: impl Into<String>, default_value: impl Into<Value>) -> Self {
        PipelineParameter {
            name: name.into(),
            default_value: default_value.into(),
        }
    }
}

/// Where an input port reads from.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// The output of another step.
    Pipeline(PipelineData),
    /// A fixed file or folder.
    Reference(DataReference),
    /// A file dataset.
    Files(FileDataset),
    /// A tabular dataset.
    Tabular(TabularDataset),
}

impl DataSource {
    /// The name of the data or dataset.
    pub fn name(&self) -> &str {
        match self {
            DataSource::Pipeline(d) => d.name(),
            DataSource::Reference(d) => &d.name,
            DataSource::Files(d) => &d.name,
            DataSource::Tabular(d) => &d.name,
        }
    }

    /// What the source's name is called in messages: `input data`, `data reference name`,
    /// `dataset name`.
    pub fn kind_noun(&self) -> &'static str {
        match self {
            DataSource::Pipeline(_) => "input data",
            DataSource::Reference(_) => "data reference name",
            DataSource::Files(_) | DataSource::Tabular(_) => "dataset name",
        }
    }

    /// A short word for the kind of source: `pipeline_data`, `reference`, `file`, `tabular`.
    pub fn kind(&self) -> &'static str {
        match self {
            DataSource::Pipeline(_) => "pipeline_data",
            DataSource::Reference(_) => "reference",
            DataSource::Files(_) => "file",
            DataSource::Tabular(_) => "tabular",
        }
    }
}

impl From<PipelineData> for DataSource {
    fn from(d: PipelineData) -> Self {
        DataSource::Pipeline(d)
    }
}
impl From<DataReference> for DataSource {
    fn from(d: DataReference) -> Self {
        DataSource::Reference(d)
    }
}
impl From<FileDataset> for DataSource {
    fn from(d: FileDataset) -> Self {
        DataSource::Files(d)
    }
}
impl From<TabularDataset> for DataSource {
    fn from(d: TabularDataset) -> Self {
        DataSource::Tabular(d)
    }
}

/// Pipelines are wired by values: a step's builder takes `&texts` as well as `texts`.
macro_rules! from_ref {
    ($($from:ty => $to:ty),* $(,)?) => {$(
        impl From<&$from> for $to {
            fn from(d: &$from) -> Self {
                d.clone().into()
            }
        }
    )*};
}
from_ref! {
    PipelineData => DataSource,
    DataReference => DataSource,
    FileDataset => DataSource,
    TabularDataset => DataSource,
    DataSource => DataSource,
    PipelineData => PipelineData,
    PipelineParameter => PipelineParameter,
}

/// Whether an input is partitioned/consumed as a main input or only handed over whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputRole {
    /// A main input (`inputs.<port>` in the fingerprint).
    Main,
    /// A side input: hashed, never partitioned (`side_inputs.<port>`).
    Side,
}

/// Binds an input port of a step to a data source.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPortBinding {
    /// The port name.
    pub name: String,
    /// Where it reads from.
    pub source: DataSource,
    /// Main or side input.
    pub role: InputRole,
}

impl InputPortBinding {
    /// A main input port `name` reading `source`.
    pub fn new(name: impl Into<String>, source: impl Into<DataSource>) -> Self {
        InputPortBinding {
            name: name.into(),
            source: source.into(),
            role: InputRole::Main,
        }
    }

    /// A side input port `name` reading `source`.
    pub fn side(name: impl Into<String>, source: impl Into<DataSource>) -> Self {
        InputPortBinding {
            name: name.into(),
            source: source.into(),
            role: InputRole::Side,
        }
    }
}

/// Binds an output port of a step to the `PipelineData` it produces.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputPortBinding {
    /// The port name.
    pub name: String,
    /// The data it produces.
    pub data: PipelineData,
}

impl OutputPortBinding {
    /// Output port `name` producing `data`.
    pub fn new(name: impl Into<String>, data: PipelineData) -> Self {
        OutputPortBinding {
            name: name.into(),
            data,
        }
    }
}

/// A registered model, as Azure's `Model.register(model_path=..., model_name=...)` makes one:
/// a file or a folder, under a name and a version (1 unless given).
///
/// A step that declares a model (`.model(..)` on its builder, `"models": ["name"]` in a spec)
/// reads it as an input: its content is hashed into the step's fingerprint (component
/// `models.<name>`), and the step gets a read-only copy laid out as Azure lays models out,
/// `<AZUREML_MODEL_DIR>/<name>/<version>/<file or folder name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    name: String,
    path: PathBuf,
    version: u32,
}

impl Model {
    /// The model `name` (Azure's rule: [`crate::check_model_name`], checked when the
    /// pipeline is built) registered from `path`, a file or a folder, version 1.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Model {
            name: name.into(),
            path: path.into(),
            version: 1,
        }
    }

    /// The same model with version `version` (1 or more, checked when the pipeline is built).
    #[must_use]
    pub fn with_version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registered file or folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `name:version`, as a step refers to a model.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// The reason the model is invalid (its name, its version), or `None`.
    pub fn check(&self) -> Option<String> {
        if let Some(reason) = crate::name::check_model_name(&self.name) {
            return Some(format!("model name {:?} {reason}", self.name));
        }
        if self.version == 0 {
            return Some(format!("model {:?}: version must be 1 or more", self.name));
        }
        None
    }

    /// The model's files, each with its path relative to `<AZUREML_MODEL_DIR>/<name>`:
    /// `<version>/<file name>` for a one-file model, `<version>/<folder name>/<path in the
    /// folder>` for a folder, sorted.
    ///
    /// # Errors
    /// [`FilesError`] when the path cannot be read, or is a folder without files.
    pub fn list(&self) -> Result<Vec<DatasetFile>, FilesError> {
        let root = std::path::absolute(&self.path).map_err(|e| FilesError::Path {
            path: self.path.clone(),
            source: Box::new(e),
        })?;
        let mut files = list_files(&root, None)?;
        let prefix = format!("{}/", self.version);
        if root.is_dir() {
            if files.is_empty() {
                return Err(FilesError::NoFiles { path: root });
            }
            let base = root
                .file_name()
                .map(|n| crate::relpath::encode(Path::new(n)))
                .unwrap_or_else(|| "model".to_string());
            for f in &mut files {
                f.relative = format!("{prefix}{base}/{}", f.relative);
            }
        } else {
            for f in &mut files {
                f.relative = format!("{prefix}{}", f.relative);
            }
        }
        Ok(files)
    }
}

/// A declared model as resolved for one run: its files, hashed into the step's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Its files, relative to `<AZUREML_MODEL_DIR>/<name>` (see [`Model::list`]).
    pub files: Vec<DatasetFile>,
}

impl ResolvedModel {
    /// Copy the model's files under `model_dir` (a step's `AZUREML_MODEL_DIR`) at
    /// `<name>/<version>/…`, each made read-only, and return what Azure's
    /// `Model.get_model_path(name)` returns: the file of a one-file model, the folder otherwise.
    ///
    /// Copies, never links: making a link read-only would change the user's own file.
    ///
    /// # Errors
    /// An I/O error naming the file that could not be copied or made read-only.
    pub fn materialise(&self, model_dir: &Path) -> std::io::Result<PathBuf> {
        let base = model_dir.join(&self.name);
        let mut entry: Option<PathBuf> = None;
        for f in &self.files {
            let rel = crate::relpath::decode(&f.relative)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let dest = base.join(&rel);
            if let Some(parent) = dest.parent() {
                fs_err::create_dir_all(parent)?;
            }
            if dest.symlink_metadata().is_ok() {
                fs_err::remove_file(&dest)?;
            }
            fs_err::copy(&f.path, &dest)?;
            let mut perms = fs_err::metadata(&dest)?.permissions();
            perms.set_readonly(true);
            fs_err::set_permissions(&dest, perms)?;
            if entry.is_none() {
                // `<version>/<file or folder name>`: the first two components.
                let mut parts = rel.components();
                if let (Some(v), Some(n)) = (parts.next(), parts.next()) {
                    entry = Some(base.join(v).join(n));
                }
            }
        }
        entry.ok_or_else(|| std::io::Error::other(format!("model {} has no files", self.name)))
    }
}

#[cfg(test)]
mod tests;
