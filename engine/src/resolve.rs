//! Resolving a node's inputs, parameters and arguments, and computing its fingerprint.
//! Pure with respect to the graph: planning and running share it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use petgraph::stable_graph::NodeIndex;
use rayon::prelude::*;
use serde_json::Value;

use crate::data::{
    list_files, DataSource, DatasetFile, InputPortBinding, InputRole, Model, ResolvedModel,
};
use crate::error::{EngineError, FilesError};
use crate::fingerprint::{Component, Fingerprint, NodeKey};
use crate::module_def::{Argument, CodeIdentity, ModuleDef, SourceRules};
use crate::pipeline::Pipeline;
use crate::step::{InputKind, ResolvedInput};
use crate::store::records::OutputManifest;
use crate::store::{is_store_dir, Store};

/// An upstream step's output as seen by its consumers.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamOutput {
    pub manifest: OutputManifest,
    /// Materialised folder (None while planning a step that was not run).
    pub path: Option<PathBuf>,
}

/// Outputs of finished steps, by (node, output port).
pub(crate) type OutputsMap = HashMap<(NodeIndex, String), UpstreamOutput>;

/// A node ready to be looked up in the cache or executed.
pub(crate) struct Prepared {
    pub fingerprint: Fingerprint,
    pub key: NodeKey,
    pub inputs: BTreeMap<String, ResolvedInput>,
    /// The declared models, by name.
    pub models: BTreeMap<String, ResolvedModel>,
}

/// A parameter value as a command-line string or environment value: strings bare,
/// everything else as JSON (`0.5`, `true`, `[1,2]`).
pub fn value_to_arg(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn prepare(
    pipeline: &Pipeline,
    idx: NodeIndex,
    upstream: &OutputsMap,
    params: &BTreeMap<String, Value>,
    store: &Store,
    verify: bool,
    build: bool,
) -> Result<Prepared, EngineError> {
    let node = pipeline.node(idx);
    let def = &node.module_def;
    let mut fp = declared_components(&node.name, def, params, store, verify)?;
    // Components the step computes (a built environment): `build` only when it will run.
    for (name, c) in &def.computed {
        let value =
            c.0.compute(&crate::store::envs::envs_dir(store.root()), build)
                .map_err(|source| EngineError::Component {
                    step: node.name.clone(),
                    component: name.clone(),
                    source,
                })?;
        fp.insert(name.clone(), Component::value(value));
    }
    let mut inputs = BTreeMap::new();
    for binding in &def.inputs {
        let prefix = match binding.role {
            InputRole::Main => "inputs",
            InputRole::Side => "side_inputs",
        };
        let (path, kind, manifest) =
            resolve_input(pipeline, idx, binding, upstream, store, verify)?;
        let path = std::path::absolute(&path).unwrap_or(path);
        fp.insert(
            format!("{prefix}.{}", binding.name),
            Component::manifest(manifest),
        );
        inputs.insert(
            binding.name.clone(),
            ResolvedInput {
                port: binding.name.clone(),
                role: binding.role,
                path,
                kind,
            },
        );
    }
    let models = resolve_models(&node.name, &def.models, &mut fp, store, verify)?;
    let key = fp.key();
    Ok(Prepared {
        fingerprint: fp,
        key,
        inputs,
        models,
    })
}

/// The components a step declares: kind, config, version, code, arguments, params, env.
fn declared_components(
    step: &str,
    def: &ModuleDef,
    params: &BTreeMap<String, Value>,
    store: &Store,
    verify: bool,
) -> Result<Fingerprint, EngineError> {
    let mut fp = Fingerprint::default();
    fp.insert(
        "kind",
        Component::value(Value::String(def.execution_type.clone())),
    );
    fp.insert("config", Component::value(def.config.clone()));
    // The declared version is one thing, hashed once: as the code's identity when the code is
    // that version (Rust closures), as its own component otherwise (a versioned script).
    match (&def.version, &def.code) {
        (Some(v), Some(CodeIdentity::Version(c))) if v == c => {}
        (Some(v), _) => fp.insert("version", Component::value(Value::String(v.clone()))),
        (None, _) => {}
    }
    match &def.code {
        Some(CodeIdentity::SourceDirectory { dir, rules }) => {
            let manifest = snapshot_source_dir(dir, rules, store, verify).map_err(|e| {
                EngineError::InvalidInput {
                    step: step.to_string(),
                    port: "source_directory".into(),
                    message: e.to_string(),
                }
            })?;
            fp.insert("code", Component::manifest(manifest));
        }
        Some(CodeIdentity::Version(v)) => {
            // In-process code cannot be hashed: it is identified by the step that owns it and
            // its declared version, so two steps that both say "v1" never share outputs.
            fp.insert(
                "code",
                Component::value(serde_json::json!({ "step": step, "version": v })),
            );
        }
        None => {}
    }
    let args: Vec<Value> = def
        .arguments
        .iter()
        .map(|a| match a {
            Argument::Literal(s) => Value::String(s.clone()),
            Argument::Param(p) => Value::String(value_to_arg(
                params.get(&p.name).unwrap_or(&p.default_value),
            )),
            Argument::Input(p) => Value::String(format!("{{inputs.{p}}}")),
            Argument::Output(p) => Value::String(format!("{{outputs.{p}}}")),
        })
        .collect();
    if !args.is_empty() {
        fp.insert("arguments", Component::value(Value::Array(args)));
    }
    for p in def.parameters() {
        let v = params
            .get(&p.name)
            .cloned()
            .unwrap_or_else(|| p.default_value.clone());
        fp.insert(format!("params.{}", p.name), Component::value(v));
    }
    let mut env: serde_json::Map<String, Value> = def
        .environment_variables
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    for name in &def.env_passthrough {
        let digest = crate::module_def::passthrough_digest(name);
        env.entry(name.clone()).or_insert(Value::String(digest));
    }
    if !env.is_empty() {
        fp.insert("env", Component::value(Value::Object(env)));
    }
    Ok(fp)
}

/// What input `binding` of node `idx` resolves to: its folder, how to read it, and its
/// manifest (relative path -> content hash).
fn resolve_input(
    pipeline: &Pipeline,
    idx: NodeIndex,
    binding: &InputPortBinding,
    upstream: &OutputsMap,
    store: &Store,
    verify: bool,
) -> Result<(PathBuf, InputKind, BTreeMap<String, String>), EngineError> {
    let input_err = |message: String| EngineError::InvalidInput {
        step: pipeline.node(idx).name.clone(),
        port: binding.name.clone(),
        message,
    };
    let files_err = |e: FilesError| input_err(e.to_string());
    let dataset_err = |name: &str, e: FilesError| input_err(format!("dataset {name:?}: {e}"));
    let resolved = match &binding.source {
        DataSource::Pipeline(_) => {
            let (from, port) = pipeline
                .producer_of(idx, &binding.name)
                .ok_or_else(|| input_err("no producer".into()))?;
            let out = upstream
                .get(&(from, port.to_string()))
                .ok_or_else(|| input_err("upstream output is not available".into()))?;
            let path = out.path.clone().unwrap_or_default();
            let files = out
                .manifest
                .files
                .keys()
                .map(|rel| DatasetFile {
                    relative: rel.clone(),
                    path: path.join(rel),
                })
                .collect();
            let manifest = out
                .manifest
                .files
                .iter()
                .map(|(k, o)| (k.clone(), o.hash.clone()))
                .collect();
            (path, InputKind::Files(files), manifest)
        }
        DataSource::Reference(r) => {
            let files = list_files(&r.path, None).map_err(files_err)?;
            let manifest = hash_all(&files, store, verify).map_err(files_err)?;
            (r.path.clone(), InputKind::Files(files), manifest)
        }
        DataSource::Files(ds) => {
            let files = ds.list().map_err(|e| dataset_err(&ds.name, e))?;
            let manifest = hash_all(&files, store, verify).map_err(files_err)?;
            (ds.path.clone(), InputKind::Files(files), manifest)
        }
        DataSource::Tabular(ds) => {
            let files = ds.list().map_err(|e| dataset_err(&ds.name, e))?;
            let manifest = hash_all(&files, store, verify).map_err(files_err)?;
            let path = ds.paths.first().cloned().unwrap_or_default();
            (
                path,
                InputKind::Tabular {
                    format: ds.format,
                    files,
                },
                manifest,
            )
        }
    };
    Ok(resolved)
}

/// The declared models, each hashed into `fp` as `models.<name>`. A model is an input: its
/// files are listed at their paths in Azure's layout (`<version>/<file or folder name>/…`),
/// so a new version or new bytes rerun the step.
fn resolve_models(
    step: &str,
    declared: &[Model],
    fp: &mut Fingerprint,
    store: &Store,
    verify: bool,
) -> Result<BTreeMap<String, ResolvedModel>, EngineError> {
    let mut models = BTreeMap::new();
    for model in declared {
        let model_err = |message: String| EngineError::InvalidModel {
            step: step.to_string(),
            model: model.name().to_string(),
            message,
        };
        if let Some(problem) = model.check() {
            return Err(model_err(problem));
        }
        let files = model.list().map_err(|e| model_err(e.to_string()))?;
        let manifest = hash_all(&files, store, verify).map_err(|e| model_err(e.to_string()))?;
        fp.insert(
            format!("models.{}", model.name()),
            Component::manifest(manifest),
        );
        models.insert(
            model.name().to_string(),
            ResolvedModel {
                name: model.name().to_string(),
                version: model.version(),
                files,
            },
        );
    }
    Ok(models)
}

/// Content hashes of `files` (memoised, in parallel), keyed by relative path.
fn hash_all(
    files: &[DatasetFile],
    store: &Store,
    verify: bool,
) -> Result<BTreeMap<String, String>, FilesError> {
    files
        .par_iter()
        .map(|f| {
            store
                .hash_file(&f.path, verify)
                .map(|h| (f.relative.clone(), h))
                .map_err(FilesError::from)
        })
        .collect()
}

/// The source folder's snapshot: relative path -> content hash of each of its
/// [`source_files`].
pub(crate) fn snapshot_source_dir(
    dir: &Path,
    rules: &SourceRules,
    store: &Store,
    verify: bool,
) -> Result<BTreeMap<String, String>, FilesError> {
    let files = source_files(dir, rules, store.root())?;
    hash_all(&files, store, verify)
}

/// The files of a source folder's snapshot, exactly those hashed into a step's fingerprint:
/// the regular files under `dir` (links followed), less what the step's `rules` leave out
/// (ignore files, skipped names) and never any store's folder (`store_root`, or any folder
/// holding a store marker). A step runs in a copy of exactly these files.
pub fn source_files(
    dir: &Path,
    rules: &SourceRules,
    store_root: &Path,
) -> Result<Vec<DatasetFile>, FilesError> {
    if !dir.is_dir() {
        return Err(FilesError::NotAFolder {
            path: dir.to_path_buf(),
        });
    }
    let store_root = store_root
        .canonicalize()
        .unwrap_or_else(|_| store_root.to_path_buf());
    let mut skip = globset::GlobSetBuilder::new();
    for pattern in &rules.skip {
        skip.add(
            globset::Glob::new(pattern).map_err(|e| FilesError::Pattern {
                what: "source rule",
                pattern: pattern.clone(),
                source: e.into(),
            })?,
        );
    }
    let skip = skip.build().map_err(|e| FilesError::Pattern {
        what: "source rules",
        pattern: rules.skip.join(", "),
        source: e.into(),
    })?;
    // Links are followed, as the copy a step runs in follows them: what runs is what is hashed.
    let mut builder = ignore::WalkBuilder::new(dir);
    builder
        .follow_links(true)
        .hidden(false)
        .git_ignore(rules.ignore_files.iter().any(|f| f == ".gitignore"))
        .git_global(false)
        .git_exclude(false)
        .ignore(rules.ignore_files.iter().any(|f| f == ".ignore"))
        .require_git(false)
        .parents(false);
    for f in rules
        .ignore_files
        .iter()
        .filter(|f| *f != ".gitignore" && *f != ".ignore")
    {
        builder.add_custom_ignore_filename(f);
    }
    let walker = builder
        .filter_entry(move |e| {
            if skip.is_match(e.file_name()) {
                return false;
            }
            // A store (this one, or any other) may sit in the source folder
            // (`source_directory: "."`): its files change every run and are never code.
            !(e.file_type().is_some_and(|t| t.is_dir())
                && (is_store_dir(e.path())
                    || e.path().canonicalize().is_ok_and(|p| p == store_root)))
        })
        .build();
    let mut files = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| FilesError::Walk(e.into()))?;
        if entry.file_type().is_some_and(|t| t.is_file()) {
            let relative = crate::store::relative_slash(dir, entry.path());
            files.push(DatasetFile {
                relative,
                path: entry.into_path(),
            });
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpenOptions;

    #[test]
    fn the_step_s_rules_decide_what_in_a_source_folder_is_code(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path().join("store"), OpenOptions::default())?;
        let src = dir.path().join("src");
        for (rel, text) in [
            ("main.py", "code"),
            ("__pycache__/main.pyc", "compiled"),
            ("data.bin", "big"),
            ("notes.tmp", "scratch"),
            (".amlignore", "*.bin\n"),
            (".gitignore", "*.tmp\n"),
        ] {
            let p = src.join(rel);
            fs_err::create_dir_all(p.parent().ok_or("no parent")?)?;
            fs_err::write(p, text)?;
        }
        let names = |rules: &SourceRules| -> Result<Vec<String>, FilesError> {
            Ok(snapshot_source_dir(&src, rules, &store, false)?
                .into_keys()
                .collect())
        };
        // No rules: everything but the store is code.
        assert_eq!(
            names(&SourceRules::default())?,
            [
                ".amlignore",
                ".gitignore",
                "__pycache__/main.pyc",
                "data.bin",
                "main.py",
                "notes.tmp"
            ]
        );
        let python = SourceRules {
            ignore_files: vec![".gitignore".into(), ".amlignore".into()],
            skip: vec!["__pycache__".into(), "*.pyc".into()],
        };
        assert_eq!(names(&python)?, [".amlignore", ".gitignore", "main.py"]);
        Ok(())
    }
}
