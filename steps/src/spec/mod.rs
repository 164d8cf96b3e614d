//! The JSON pipeline spec (DESIGN.md section 8): parsed with serde into a [`Pipeline`].
//! Every error names the file, the step and the field.
//!
//! This module reads the document and assembles the graph; each kind of thing a spec declares
//! has its own file: `datasets.rs`, `models.rs`, `compute.rs`, `parallel_run.rs`, `command.rs`. `json.rs` turns serde's
//! errors into sentences.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use stepgraph_engine::check_data_name;
use stepgraph_engine::{DataSource, Pipeline, PipelineData, PipelineParameter, Step};

mod command;
mod compute;
mod datasets;
mod json;
mod models;
mod parallel_run;
#[cfg(test)]
mod tests;

use command::CommandSpec;
use json::{Problem, Seg};
use parallel_run::ParallelRunSpec;

/// A spec that cannot be turned into a pipeline. The message names the file, step and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .messages.join("\n"))]
pub struct SpecError {
    /// One line per problem, each starting with the file name.
    pub messages: Vec<String>,
}

impl SpecError {
    fn one(msg: String) -> Self {
        SpecError {
            messages: vec![msg],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    datasets: BTreeMap<String, Value>,
    #[serde(default)]
    models: BTreeMap<String, Value>,
    #[serde(default)]
    compute: BTreeMap<String, Value>,
    steps: Vec<Value>,
}

/// A step's spec, of any type: what the graph assembly needs of it.
trait StepSpec {
    /// The step's name.
    fn name(&self) -> &str;
    /// The names of its outputs.
    fn outputs(&self) -> Vec<&String>;
    /// The names that become paths (output folders, ports), with their fields.
    fn path_names(&self) -> Vec<(String, &String)>;
    /// The step; its problems go to `errors` (`None` when it cannot be made).
    fn into_step(self: Box<Self>, cx: &Context<'_>, errors: &mut Vec<String>) -> Built;
}

/// A step made from its spec.
type Built = Option<Arc<dyn Step>>;

fn yes() -> bool {
    true
}

/// What the parts of the parser share: where the spec is, its JSON and its parameters.
struct Context<'a> {
    /// The file's name in messages.
    file: &'a str,
    /// The whole document (for locating errors).
    root: &'a Value,
    /// The folder relative paths resolve against.
    base: &'a Path,
    /// The pipeline parameters.
    params: BTreeMap<String, PipelineParameter>,
    /// The data names steps may refer to.
    names: Names,
    /// The models steps may read.
    models: models::Models,
    /// The compute targets steps may run on.
    computes: compute::Computes,
}

impl Context<'_> {
    /// `p`, resolved against the spec's folder.
    fn resolve(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

/// The data names steps may refer to: datasets and step outputs (one namespace).
#[derive(Default)]
struct Names {
    datasets: BTreeMap<String, DataSource>,
    /// Output name -> the step producing it.
    outputs: BTreeMap<String, String>,
    /// Names of datasets and outputs whose definition has an error already reported: a
    /// reference to them is not reported again.
    broken: BTreeSet<String>,
    /// A step whose outputs cannot be told failed to parse: any name may be one of them.
    outputs_unknown: bool,
}

impl Names {
    /// The data `data` named in `field` of step `step`.
    fn lookup(
        &self,
        file: &str,
        step: &str,
        field: &str,
        data: &str,
    ) -> Result<DataSource, Problem> {
        if let Some(d) = self.datasets.get(data) {
            Ok(d.clone())
        } else if self.outputs.contains_key(data)
            || self.broken.contains(data)
            || self.outputs_unknown
        {
            Ok(PipelineData::new(data).into())
        } else {
            Err(Problem(format!(
                "{file}: step {step:?}: field {field:?} names unknown data {data:?} (not a dataset nor a step output)"
            )))
        }
    }

    /// Each name in `data`, looked up; the unknown ones are reported into `errors`.
    fn lookup_all(
        &self,
        file: &str,
        step: &str,
        field: &str,
        data: &[String],
        errors: &mut Vec<String>,
    ) -> Vec<DataSource> {
        data.iter()
            .filter_map(|d| {
                self.lookup(file, step, field, d)
                    .map_err(|e| errors.push(e.to_string()))
                    .ok()
            })
            .collect()
    }
}

/// The cause of an `fs_err` error about `path` (its text after the quoted path), for a message
/// that names the path itself; any other error as it is.
fn cause_of(e: &std::io::Error, path: &Path) -> String {
    let text = e.to_string();
    match text.split_once(&format!("`{}`: ", path.display())) {
        Some((_, cause)) => cause.to_string(),
        None => text,
    }
}

/// Read and parse a spec file.
///
/// # Errors
/// [`SpecError`] naming the file (and step and field) for unreadable files, bad JSON,
/// unknown or missing fields, dangling references, invalid configuration and cycles.
pub fn load_spec(path: &Path) -> Result<Pipeline, SpecError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| {
        SpecError::one(format!(
            "{}: cannot read: {}",
            path.display(),
            cause_of(&e, path)
        ))
    };
    let mut bytes = Vec::new();
    fs_err::File::open(path)
        .map_err(cannot)?
        .take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecError::one(format!(
            "{}: the spec is larger than {MAX_SPEC_BYTES} bytes; a pipeline spec is a small JSON file",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        SpecError::one(format!(
            "{}: the spec is not UTF-8 text (byte {} is not)",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let base = std::path::absolute(&base).unwrap_or(base);
    parse_spec(&text, &path.display().to_string(), &base)
}

/// The largest spec file read (16 MiB): specs are small, and `/dev/zero` is not one.
pub const MAX_SPEC_BYTES: u64 = 16 << 20;

/// Parse spec `text` (named `file` in messages), resolving relative paths against `base`.
///
/// # Errors
/// As [`load_spec`].
pub fn parse_spec(text: &str, file: &str, base: &Path) -> Result<Pipeline, SpecError> {
    let raw: Value = json::parse_json(text, file).map_err(|messages| SpecError { messages })?;
    if !raw.is_object() {
        return Err(SpecError::one(format!(
            "{file}: the spec must be a JSON object with \"name\" and \"steps\", got {}",
            json::describe(&raw)
        )));
    }
    let spec: SpecFile =
        json::typed(file, &raw, &[], &raw).map_err(|e| SpecError::one(e.to_string()))?;
    let mut cx = Context {
        file,
        root: &raw,
        base,
        params: spec
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), PipelineParameter::new(k.clone(), v.clone())))
            .collect(),
        names: Names::default(),
        models: models::Models::default(),
        computes: compute::Computes::default(),
    };
    let mut errors = Vec::new();
    datasets::collect(&mut cx, &spec.datasets, &mut errors);
    models::collect(&mut cx, &spec.models, &mut errors);
    compute::collect(&mut cx, &spec.compute, &mut errors);
    let parsed = parse_steps(&mut cx, &spec.steps, &mut errors);

    let mut builder = Pipeline::builder(spec.name.clone());
    for p in cx.params.values() {
        builder.add_parameter(p.clone());
    }
    for s in parsed {
        if let Some(step) = s.into_step(&cx, &mut errors) {
            builder.add_step(step);
        }
    }
    if !errors.is_empty() {
        return Err(SpecError { messages: errors });
    }
    builder.build().map_err(|e| SpecError {
        messages: e.0.iter().map(|e| format!("{file}: {e}")).collect(),
    })
}

/// First pass over the steps: parse each and collect the output names (they share the
/// dataset namespace). A step that does not parse marks its outputs broken.
fn parse_steps(
    cx: &mut Context<'_>,
    steps: &[Value],
    errors: &mut Vec<String>,
) -> Vec<Box<dyn StepSpec>> {
    let names = &mut cx.names;
    let mut parsed = Vec::new();
    for (i, raw) in steps.iter().enumerate() {
        match step_spec(cx.file, cx.root, i, raw) {
            Err(e) => {
                errors.push(e.to_string());
                for v in ["output", "outputs"].iter().filter_map(|k| raw.get(k)) {
                    match v {
                        Value::String(o) => {
                            names.broken.insert(o.clone());
                        }
                        Value::Array(os) => names
                            .broken
                            .extend(os.iter().filter_map(Value::as_str).map(str::to_string)),
                        // Its outputs cannot be told: any name may be one of them.
                        _ => names.outputs_unknown = true,
                    }
                }
            }
            Ok(s) => {
                if register_outputs(cx.file, s.as_ref(), names, errors) {
                    parsed.push(s);
                }
            }
        }
    }
    parsed
}

/// Check the names of step `s` that become paths (output folders, ports: one safe component
/// each) and record its outputs. False when a name is not valid (the step is left out).
fn register_outputs(
    file: &str,
    s: &dyn StepSpec,
    names: &mut Names,
    errors: &mut Vec<String>,
) -> bool {
    let name = s.name();
    let named = s.path_names();
    let mut bad_name = false;
    for (field, n) in &named {
        if let Some(reason) = check_data_name(n) {
            errors.push(format!(
                "{file}: step {name:?}: field {field:?}: {n:?} is not a valid name: {reason}"
            ));
            names.broken.insert(n.to_string());
            bad_name = true;
        }
    }
    if bad_name {
        return false;
    }
    for o in s.outputs() {
        if names.datasets.contains_key(o) {
            errors.push(format!(
                "{file}: step {name:?}: output {o:?} has the name of a dataset (they share one namespace)"
            ));
        }
        names
            .outputs
            .entry(o.clone())
            .or_insert_with(|| name.to_string());
    }
    true
}

/// The object at `base` without its `"type"` member, and that type, which must be one of
/// `kinds`.
fn tagged(
    file: &str,
    root: &Value,
    base: &[Seg],
    raw: &Value,
    kinds: &[&str],
    example: &str,
) -> Result<(usize, Value), Problem> {
    let expected = match kinds {
        [a, b] => format!("{a:?} or {b:?}"),
        [rest @ .., last] => {
            let rest: Vec<String> = rest.iter().map(|k| format!("{k:?}")).collect();
            format!("{} or {last:?}", rest.join(", "))
        }
        [] => String::new(),
    };
    let Some(obj) = raw.as_object() else {
        return Err(Problem(json::located(
            file,
            root,
            base,
            &format!(
                "expected an object like {example}, got {}",
                json::describe(raw)
            ),
        )));
    };
    let mut at = base.to_vec();
    at.push(Seg::Key("type".into()));
    let kind = match obj.get("type") {
        None => {
            return Err(Problem(json::located(
                file,
                root,
                base,
                &format!("missing field \"type\" (expected {expected})"),
            )))
        }
        Some(Value::String(k)) if kinds.contains(&k.as_str()) => k,
        Some(other) => {
            return Err(Problem(json::located(
                file,
                root,
                &at,
                &format!("expected {expected}, got {}", json::describe(other)),
            )))
        }
    };
    let index = kinds.iter().position(|k| k == kind).unwrap_or(0);
    let mut rest = obj.clone();
    rest.remove("type");
    Ok((index, Value::Object(rest)))
}

/// Step number `index` (0-based) of the spec `root`.
fn step_spec(
    file: &str,
    root: &Value,
    index: usize,
    raw: &Value,
) -> Result<Box<dyn StepSpec>, Problem> {
    let base = [Seg::Key("steps".into()), Seg::Index(index)];
    let (kind, rest) = tagged(
        file,
        root,
        &base,
        raw,
        &["parallel_run", "command"],
        r#"{"name": "my-step", "type": "command", "command": ["true"]}"#,
    )?;
    match kind {
        0 => json::typed::<ParallelRunSpec>(file, root, &base, &rest).map(|s| Box::new(s) as _),
        _ => json::typed::<CommandSpec>(file, root, &base, &rest).map(|s| Box::new(s) as _),
    }
}
