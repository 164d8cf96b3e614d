//! The JSON pipeline spec (DESIGN.md section 8): parsed with serde into a [`Pipeline`].
//! Every error names the file, the step and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use stepgraph_engine::{
    Argument, DataReference, DataSource, FileDataset, Pipeline, PipelineData, PipelineParameter,
    TabularDataset, TabularFormat,
};

use stepgraph_engine::name::check_data_name;

use crate::parallel_run::{AppendRowFormat, OutputAction, ParallelRunConfig, ParallelRunStep};
use crate::placeholders;
use crate::CommandStep;

mod json;
use json::{MiniBatchSize, OneOrMany, Seg};

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
    steps: Vec<Value>,
}

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TabularDatasetSpec {
    path: OneOrMany,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceDatasetSpec {
    path: String,
}

/// A step, by its `"type"` (read first, so errors inside name their field).
#[derive(Debug)]
enum StepSpec {
    ParallelRun(ParallelRunSpec),
    Command(CommandSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParallelRunSpec {
    name: String,
    inputs: Vec<String>,
    #[serde(default)]
    side_inputs: Vec<String>,
    output: Option<String>,
    #[serde(default)]
    arguments: Vec<String>,
    #[serde(default = "yes")]
    allow_reuse: bool,
    #[serde(default)]
    run_after: Vec<String>,
    parallel_run_config: Box<PrcSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    name: String,
    command: Vec<String>,
    source_directory: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default)]
    environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    env_passthrough: Vec<String>,
    #[serde(default = "yes")]
    allow_reuse: bool,
    #[serde(default)]
    run_after: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrcSpec {
    source_directory: Option<String>,
    entry_script: Option<String>,
    entry_command: Option<Vec<String>>,
    mini_batch_size: Option<MiniBatchSize>,
    error_threshold: Option<i64>,
    allowed_failed_count: Option<i64>,
    allowed_failed_percent: Option<f64>,
    output_action: Option<String>,
    #[serde(default)]
    environment_variables: BTreeMap<String, String>,
    #[serde(default)]
    env_passthrough: Vec<String>,
    append_row_file_name: Option<String>,
    append_row_format: Option<String>,
    process_count_per_node: Option<u32>,
    node_count: Option<u32>,
    run_invocation_timeout: Option<i64>,
    run_max_try: Option<i64>,
    partition_keys: Option<Vec<String>>,
    environment: Option<String>,
    logging_level: Option<String>,
    description: Option<String>,
}

/// Read and parse a spec file.
///
/// # Errors
/// [`SpecError`] naming the file (and step and field) for unreadable files, bad JSON,
/// unknown or missing fields, dangling references, invalid configuration and cycles.
pub fn load_spec(path: &Path) -> Result<Pipeline, SpecError> {
    use std::io::Read;
    let cannot =
        |e: std::io::Error| SpecError::one(format!("{}: cannot read: {e}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
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
    let spec: SpecFile = json::typed(file, &raw, &[], &raw).map_err(SpecError::one)?;
    let raw_root = &raw;
    let mut errors = Vec::new();
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let params: BTreeMap<String, PipelineParameter> = spec
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), PipelineParameter::new(k.clone(), v.clone())))
        .collect();

    let mut datasets: BTreeMap<String, DataSource> = BTreeMap::new();
    // Names of datasets and outputs whose definition has an error already reported: a reference
    // to them is not reported again.
    let mut broken: BTreeSet<String> = BTreeSet::new();
    let mut outputs_unknown = false;
    for (name, raw) in &spec.datasets {
        // The name becomes a port and a folder name: it must be one safe path component.
        if let Some(reason) = check_data_name(name) {
            errors.push(format!(
                "{file}: dataset {name:?}: the name is not valid: {reason}"
            ));
            broken.insert(name.clone());
            continue;
        }
        match dataset_spec(file, raw_root, name, raw) {
            Err(e) => {
                errors.push(e);
                broken.insert(name.clone());
            }
            Ok(DatasetSpec::File(FileDatasetSpec { path, pattern })) => {
                let mut ds = FileDataset::from_files(name.clone(), resolve(&path));
                if let Some(p) = pattern {
                    ds = ds.with_pattern(p);
                }
                datasets.insert(name.clone(), ds.into());
            }
            Ok(DatasetSpec::Tabular(TabularDatasetSpec { path, format })) => {
                let paths: Vec<PathBuf> = match path {
                    OneOrMany::One(p) => vec![resolve(&p)],
                    OneOrMany::Many(ps) => ps.iter().map(|p| resolve(p)).collect(),
                };
                let fmt = match format.as_deref() {
                    Some("csv") => TabularFormat::Csv,
                    Some("jsonl") => TabularFormat::JsonLines,
                    None if paths
                        .first()
                        .and_then(|p| p.extension())
                        .is_some_and(|e| e == "jsonl" || e == "json") =>
                    {
                        TabularFormat::JsonLines
                    }
                    None => TabularFormat::Csv,
                    Some(other) => {
                        errors.push(format!(
                            "{file}: dataset {name:?}: field \"format\": expected \"csv\" or \"jsonl\", got the string {other:?}"
                        ));
                        broken.insert(name.clone());
                        continue;
                    }
                };
                datasets.insert(
                    name.clone(),
                    TabularDataset {
                        name: name.clone(),
                        paths,
                        format: fmt,
                    }
                    .into(),
                );
            }
            Ok(DatasetSpec::Reference(ReferenceDatasetSpec { path })) => {
                datasets.insert(
                    name.clone(),
                    DataReference::new(name.clone(), resolve(&path)).into(),
                );
            }
        }
    }

    // First pass: parse steps and collect output names (they share the dataset namespace).
    let mut parsed = Vec::new();
    let mut outputs: BTreeMap<String, String> = BTreeMap::new();
    for (i, raw) in spec.steps.iter().enumerate() {
        match step_spec(file, raw_root, i, raw) {
            Err(e) => {
                errors.push(e);
                for v in ["output", "outputs"].iter().filter_map(|k| raw.get(k)) {
                    match v {
                        Value::String(o) => {
                            broken.insert(o.clone());
                        }
                        Value::Array(os) => {
                            broken.extend(os.iter().filter_map(Value::as_str).map(str::to_string))
                        }
                        // Its outputs cannot be told: any name may be one of them.
                        _ => outputs_unknown = true,
                    }
                }
            }
            Ok(s) => {
                let (name, outs): (&String, Vec<&String>) = match &s {
                    StepSpec::ParallelRun(p) => (&p.name, p.output.iter().collect()),
                    StepSpec::Command(c) => (&c.name, c.outputs.iter().collect()),
                };
                // Names that become paths (output folders, ports): one safe component each.
                let named: Vec<(String, &String)> = match &s {
                    StepSpec::ParallelRun(p) => {
                        p.output.iter().map(|o| ("output".to_string(), o)).collect()
                    }
                    StepSpec::Command(c) => c
                        .outputs
                        .iter()
                        .enumerate()
                        .map(|(i, o)| (format!("outputs[{i}]"), o))
                        .chain(c.inputs.keys().map(|k| ("inputs".to_string(), k)))
                        .collect(),
                };
                let mut bad_name = false;
                for (field, n) in named {
                    if let Some(reason) = check_data_name(n) {
                        errors.push(format!(
                            "{file}: step {name:?}: field {field:?}: {n:?} is not a valid name: {reason}"
                        ));
                        broken.insert(n.clone());
                        bad_name = true;
                    }
                }
                if bad_name {
                    continue;
                }
                for o in outs {
                    if datasets.contains_key(o) {
                        errors.push(format!(
                            "{file}: step {name:?}: output {o:?} has the name of a dataset (they share one namespace)"
                        ));
                    }
                    outputs.entry(o.clone()).or_insert_with(|| name.clone());
                }
                parsed.push(s);
            }
        }
    }
    let lookup = |step: &str, field: &str, data: &str| -> Result<DataSource, String> {
        if let Some(d) = datasets.get(data) {
            Ok(d.clone())
        } else if outputs.contains_key(data) || broken.contains(data) || outputs_unknown {
            Ok(PipelineData::new(data).into())
        } else {
            Err(format!(
                "{file}: step {step:?}: field {field:?} names unknown data {data:?} (not a dataset nor a step output)"
            ))
        }
    };

    let mut builder = Pipeline::builder(spec.name.clone());
    for p in params.values() {
        builder.add_parameter(p.clone());
    }
    for s in parsed {
        match s {
            StepSpec::ParallelRun(ParallelRunSpec {
                name,
                inputs,
                side_inputs,
                output,
                arguments,
                allow_reuse,
                run_after,
                parallel_run_config,
            }) => {
                let mut ins = Vec::new();
                for d in &inputs {
                    match lookup(&name, "inputs", d) {
                        Ok(s) => ins.push(s),
                        Err(e) => errors.push(e),
                    }
                }
                let mut sides = Vec::new();
                for d in &side_inputs {
                    match lookup(&name, "side_inputs", d) {
                        Ok(s) => sides.push(s),
                        Err(e) => errors.push(e),
                    }
                }
                let mut args = Vec::new();
                for a in &arguments {
                    match spec_argument(a, &params) {
                        Ok(arg) => args.push(arg),
                        Err(e) => {
                            errors.push(format!("{file}: step {name:?}: field \"arguments\": {e}"))
                        }
                    }
                }
                let cfg = match prc_config(*parallel_run_config, &resolve) {
                    Ok(c) => c,
                    Err((field, msg)) => {
                        let field = format!("parallel_run_config.{field}");
                        errors.push(format!("{file}: step {name:?}: field {field:?}: {msg}"));
                        continue;
                    }
                };
                let mut step = ParallelRunStep::new(
                    name,
                    cfg,
                    ins,
                    output.map(PipelineData::new),
                    sides,
                    args,
                    allow_reuse,
                );
                for a in run_after {
                    step = step.run_after(a);
                }
                builder = builder.step(step);
            }
            StepSpec::Command(CommandSpec {
                name,
                command,
                source_directory,
                inputs,
                outputs: outs,
                environment_variables,
                env_passthrough,
                allow_reuse,
                run_after,
            }) => {
                let mut step =
                    CommandStep::new(name.clone(), command.clone()).allow_reuse(allow_reuse);
                if let Some(d) = source_directory {
                    step = step.source_directory(resolve(&d));
                }
                for (port, d) in &inputs {
                    match lookup(&name, "inputs", d) {
                        Ok(s) => step = step.input(port.clone(), s),
                        Err(e) => errors.push(e),
                    }
                }
                for o in outs {
                    step = step.output(o.clone(), PipelineData::new(o));
                }
                for (k, v) in environment_variables {
                    step = step.env(k, v);
                }
                step = step.env_passthrough(env_passthrough);
                for arg in &command {
                    for p in placeholders::find(arg) {
                        if p.namespace == "params" {
                            if let Some(param) = params.get(&p.name) {
                                step = step.param(param.clone());
                            }
                        }
                    }
                }
                for a in run_after {
                    step = step.run_after(a);
                }
                builder = builder.step(step);
            }
        }
    }
    if !errors.is_empty() {
        return Err(SpecError { messages: errors });
    }
    builder.build().map_err(|e| SpecError {
        messages: e.0.iter().map(|e| format!("{file}: {e}")).collect(),
    })
}

/// `{params.NAME}` as a whole argument becomes that parameter; anything else is literal.
fn spec_argument(
    a: &str,
    params: &BTreeMap<String, PipelineParameter>,
) -> Result<Argument, String> {
    let found = placeholders::find(a);
    if found.is_empty() {
        return Ok(Argument::Literal(a.to_string()));
    }
    for p in &found {
        if p.namespace != "params" {
            return Err(format!(
                "{a:?}: only {{params.NAME}} placeholders are allowed here"
            ));
        }
        if !params.contains_key(&p.name) {
            return Err(format!("{a:?} refers to unknown parameter {:?}", p.name));
        }
    }
    match (
        found.as_slice(),
        a.strip_prefix("{params.").and_then(|r| r.strip_suffix('}')),
    ) {
        ([p], Some(n)) if n == p.name => Ok(Argument::Param(params[&p.name].clone())),
        _ => Err(format!(
            "{a:?}: a parameter placeholder must be the whole argument"
        )),
    }
}

fn prc_config(
    s: PrcSpec,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<ParallelRunConfig, (String, String)> {
    let mut b = ParallelRunConfig::builder();
    match (s.entry_script, s.entry_command) {
        (Some(_), Some(_)) => {
            return Err((
                "entry_command".into(),
                "give entry_script or entry_command, not both".into(),
            ))
        }
        (Some(e), None) => b = b.entry_script(e),
        (None, Some(c)) => b = b.entry_command(c),
        (None, None) => {
            return Err((
                "entry_script".into(),
                "is required (or entry_command)".into(),
            ))
        }
    }
    if let Some(d) = s.source_directory {
        b = b.source_directory(resolve(&d));
    }
    if let Some(m) = s.mini_batch_size {
        b = b.mini_batch_size(m.0);
    }
    if let Some(v) = s.error_threshold {
        b = b.error_threshold(v);
    }
    if let Some(v) = s.allowed_failed_count {
        b = b.allowed_failed_count(v);
    }
    if let Some(v) = s.allowed_failed_percent {
        b = b.allowed_failed_percent(v);
    }
    if let Some(v) = s.output_action {
        b = b.output_action(OutputAction::parse(&v).map_err(|e| (e.field, e.message))?);
    }
    for (k, v) in s.environment_variables {
        b = b.environment_variable(k, v);
    }
    b = b.env_passthrough(s.env_passthrough);
    if let Some(v) = s.append_row_file_name {
        b = b.append_row_file_name(v);
    }
    if let Some(v) = s.append_row_format {
        b = b.append_row_format(AppendRowFormat::parse(&v).map_err(|e| (e.field, e.message))?);
    }
    if let Some(v) = s.process_count_per_node {
        b = b.process_count_per_node(v);
    }
    if let Some(v) = s.node_count {
        b = b.node_count(v);
    }
    if let Some(v) = s.run_invocation_timeout {
        b = b.run_invocation_timeout(v);
    }
    if let Some(v) = s.run_max_try {
        b = b.run_max_try(v);
    }
    if let Some(v) = s.partition_keys {
        b = b.partition_keys(v);
    }
    if let Some(v) = s.environment {
        b = b.environment(v);
    }
    if let Some(v) = s.logging_level {
        b = b.logging_level(v);
    }
    if let Some(v) = s.description {
        b = b.description(v);
    }
    b.build().map_err(|e| (e.field, e.message))
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
) -> Result<(usize, Value), String> {
    let expected = match kinds {
        [a, b] => format!("{a:?} or {b:?}"),
        [rest @ .., last] => {
            let rest: Vec<String> = rest.iter().map(|k| format!("{k:?}")).collect();
            format!("{} or {last:?}", rest.join(", "))
        }
        [] => String::new(),
    };
    let Some(obj) = raw.as_object() else {
        return Err(json::located(
            file,
            root,
            base,
            &format!(
                "expected an object like {example}, got {}",
                json::describe(raw)
            ),
        ));
    };
    let mut at = base.to_vec();
    at.push(Seg::Key("type".into()));
    let kind = match obj.get("type") {
        None => {
            return Err(json::located(
                file,
                root,
                base,
                &format!("missing field \"type\" (expected {expected})"),
            ))
        }
        Some(Value::String(k)) if kinds.contains(&k.as_str()) => k,
        Some(other) => {
            return Err(json::located(
                file,
                root,
                &at,
                &format!("expected {expected}, got {}", json::describe(other)),
            ))
        }
    };
    let index = kinds.iter().position(|k| k == kind).unwrap_or(0);
    let mut rest = obj.clone();
    rest.remove("type");
    Ok((index, Value::Object(rest)))
}

/// Dataset `name` of the spec `root`.
fn dataset_spec(file: &str, root: &Value, name: &str, raw: &Value) -> Result<DatasetSpec, String> {
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

/// Step number `index` (0-based) of the spec `root`.
fn step_spec(file: &str, root: &Value, index: usize, raw: &Value) -> Result<StepSpec, String> {
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
        0 => json::typed(file, root, &base, &rest).map(StepSpec::ParallelRun),
        _ => json::typed(file, root, &base, &rest).map(StepSpec::Command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
      "name": "batch-scoring",
      "parameters": {"threshold": 0.5},
      "datasets": {"images": {"type": "file", "path": "data", "pattern": "**/*.txt"}},
      "steps": [
        {"name": "score-images", "type": "parallel_run", "inputs": ["images"], "output": "scores",
         "arguments": ["--threshold", "{params.threshold}"],
         "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
           "mini_batch_size": "5", "error_threshold": 10, "output_action": "append_row",
           "process_count_per_node": 2, "node_count": 1, "run_invocation_timeout": 60, "run_max_try": 3}},
        {"name": "summarize", "type": "command",
         "command": ["python3", "summarize.py", "{inputs.scores}", "{outputs.report}"],
         "source_directory": "scripts", "inputs": {"scores": "scores"}, "outputs": ["report"]}
      ]
    }"#;

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("scripts")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
        std::fs::write(
            dir.path().join("scripts/score.py"),
            "def run(b): return b\n",
        )
        .expect("write");
        dir
    }

    fn err_of(text: &str) -> String {
        let dir = fixture();
        match parse_spec(text, "pipeline.json", dir.path()) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_endless_spec_file_is_refused_without_reading_it_all() {
        let err = match load_spec(Path::new("/dev/zero")) {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        assert_eq!(
            err,
            "/dev/zero: the spec is larger than 16777216 bytes; a pipeline spec is a small JSON file"
        );
    }

    #[test]
    fn names_that_would_be_paths_are_refused_naming_the_field() {
        let spec = r#"{"name": "attack",
          "datasets": {"../d": {"type": "file", "path": "data"}},
          "steps": [
            {"name": "copy", "type": "command", "command": ["true"],
             "inputs": {"a/b": "../d"}, "outputs": ["copied", "/home/someone/victim", "../x"]},
            {"name": "score", "type": "parallel_run", "inputs": ["../d"], "output": "..",
             "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
               "error_threshold": 0}}]}"#;
        let err = err_of(spec);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines,
            [
                "pipeline.json: dataset \"../d\": the name is not valid: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"copy\": field \"outputs[1]\": \"/home/someone/victim\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"copy\": field \"outputs[2]\": \"../x\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"copy\": field \"inputs\": \"a/b\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
                "pipeline.json: step \"score\": field \"output\": \"..\" is not a valid name: may contain only lowercase letters, digits, underscores and dashes (no path separators or dots)",
            ],
            "{err}"
        );
    }

    #[test]
    fn the_design_example_parses() {
        assert_eq!(err_of(GOOD), "ok");
    }

    #[test]
    fn unknown_field_names_file_step_and_field() {
        let bad = GOOD.replace("\"mini_batch_size\"", "\"mini_batchsize\"");
        let e = err_of(&bad);
        assert!(
            e.starts_with("pipeline.json: step \"score-images\": unknown field \"mini_batchsize\" in \"parallel_run_config\" (expected one of \"source_directory\", "),
            "{e}"
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            (
                GOOD.replace("\"inputs\": [\"images\"]", "\"inputs\": [\"imagez\"]"),
                "unknown data \"imagez\"",
            ),
            (
                GOOD.replace("\"error_threshold\": 10,", ""),
                "error_threshold",
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": \"ten\""),
                "expected a whole number, got the string \"ten\"",
            ),
            (
                GOOD.replace("{params.threshold}", "{params.thresh}"),
                "unknown parameter \"thresh\"",
            ),
            (GOOD.replace("\"run_after\": []", ""), "ok"),
            (
                GOOD.replace("\"summarize\"", "\"Summarize\""),
                "invalid step name",
            ),
            (
                GOOD.replace("\"type\": \"command\"", "\"type\": \"shell\""),
                "field \"type\": expected \"parallel_run\" or \"command\", got the string \"shell\"",
            ),
            (
                GOOD.replace("{inputs.scores}", "{inputs.score}"),
                "unknown input \"score\"",
            ),
            ("{\"name\": 1".to_string(), "pipeline.json: "),
            ("[]".to_string(), "must be a JSON object"),
        ];
        for (text, want) in cases {
            let e = err_of(&text);
            assert!(e.contains(want), "want {want:?} in {e:?}");
            assert!(e == "ok" || e.starts_with("pipeline.json: "), "{e}");
        }
    }

    /// Each bad spec gives exactly one sentence naming the file, the step (or dataset, or
    /// parameter) and the field, what was expected and what was found.
    #[test]
    fn type_errors_name_file_step_field_and_expectation() {
        let prc = "pipeline.json: step \"score-images\": field \"parallel_run_config.";
        let cases: Vec<(String, String)> = vec![
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": 5.5"),
                format!("{prc}mini_batch_size\": expected a whole number of files or a size like \"10MB\", got 5.5"),
            ),
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": -5"),
                format!("{prc}mini_batch_size\": expected a whole number of files or a size like \"10MB\", got -5"),
            ),
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": true"),
                format!("{prc}mini_batch_size\": expected a whole number of files or a size like \"10MB\", got true"),
            ),
            (
                GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": 0"),
                format!("{prc}mini_batch_size\": must be greater than 0"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": \"10\""),
                format!("{prc}error_threshold\": expected a whole number, got the string \"10\""),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": 10.5"),
                format!("{prc}error_threshold\": expected a whole number, got 10.5"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": null"),
                format!("{prc}error_threshold\": is required (-1 for no limit)"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": 1e309"),
                format!("{prc}error_threshold\": expected a number that fits in 64 bits, got 1e309 (line 9, column 55), which is out of range"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10", "\"error_threshold\": 1e999999999999"),
                format!("{prc}error_threshold\": expected a number that fits in 64 bits, got 1e999999999999 (line 9, column 55), which is out of range"),
            ),
            (
                GOOD.replace("\"run_max_try\": 3", "\"run_max_try\": 99999999999999999999"),
                format!("{prc}run_max_try\": expected a whole number, got 1e+20, which is too large"),
            ),
            (
                GOOD.replace("\"process_count_per_node\": 2", "\"process_count_per_node\": -2"),
                format!("{prc}process_count_per_node\": expected a whole number from 0 to 4294967295, got -2"),
            ),
            (
                GOOD.replace("\"node_count\": 1", "\"node_count\": [1]"),
                format!("{prc}node_count\": expected a whole number from 0 to 4294967295, got a list"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10,", "\"allowed_failed_percent\": \"5%\", \"error_threshold\": 10,"),
                format!("{prc}allowed_failed_percent\": expected a number, got the string \"5%\""),
            ),
            (
                GOOD.replace("\"output_action\": \"append_row\"", "\"output_action\": 1"),
                format!("{prc}output_action\": expected a string, got 1"),
            ),
            (
                GOOD.replace("\"entry_script\": \"score.py\"", "\"entry_command\": \"score.py\""),
                format!("{prc}entry_command\": expected a list, got the string \"score.py\""),
            ),
            (
                GOOD.replace("\"entry_script\": \"score.py\"", "\"entry_command\": [\"python3\", 3]"),
                format!("{prc}entry_command[1]\": expected a string, got 3"),
            ),
            (
                GOOD.replace("\"error_threshold\": 10,", "\"environment_variables\": {\"A\": 1}, \"error_threshold\": 10,"),
                format!("{prc}environment_variables.A\": expected a string, got 1"),
            ),
            (
                GOOD.replace("\"parallel_run_config\": {", "\"parallel_run_config\": 5, \"x\": {"),
                "pipeline.json: step \"score-images\": field \"parallel_run_config\": expected an object, got 5".into(),
            ),
            (
                GOOD.replace("\"inputs\": [\"images\"]", "\"inputs\": \"images\""),
                "pipeline.json: step \"score-images\": field \"inputs\": expected a list, got the string \"images\"".into(),
            ),
            (
                GOOD.replace("\"output\": \"scores\"", "\"output\": [\"scores\"]"),
                "pipeline.json: step \"score-images\": field \"output\": expected a string, got a list".into(),
            ),
            (
                GOOD.replace("\"inputs\": [\"images\"],", "\"inputs\": [\"images\"], \"allow_reuse\": \"yes\","),
                "pipeline.json: step \"score-images\": field \"allow_reuse\": expected true or false, got the string \"yes\"".into(),
            ),
            (
                GOOD.replace("\"--threshold\", ", "\"--threshold\", 0.5, "),
                "pipeline.json: step \"score-images\": field \"arguments[1]\": expected a string, got 0.5".into(),
            ),
            (
                GOOD.replace("\"inputs\": {\"scores\": \"scores\"}", "\"inputs\": {\"scores\": 1}"),
                "pipeline.json: step \"summarize\": field \"inputs.scores\": expected a string, got 1".into(),
            ),
            (
                GOOD.replace("\"outputs\": [\"report\"]", "\"outputs\": [\"report\", 3]"),
                "pipeline.json: step \"summarize\": field \"outputs[1]\": expected a string, got 3".into(),
            ),
            (
                GOOD.replace("\"command\": [\"python3\"", "\"command\": [false"),
                "pipeline.json: step \"summarize\": field \"command[0]\": expected a string, got false".into(),
            ),
            (
                GOOD.replace("\"name\": \"summarize\", ", ""),
                "pipeline.json: step #2: missing field \"name\"".into(),
            ),
            (
                GOOD.replace("\"name\": \"summarize\"", "\"name\": 2"),
                "pipeline.json: step #2: field \"name\": expected a string, got 2".into(),
            ),
            (
                GOOD.replace("\"type\": \"command\",", ""),
                "pipeline.json: step \"summarize\": missing field \"type\" (expected \"parallel_run\" or \"command\")".into(),
            ),
            (
                GOOD.replace("\"steps\": [", "\"steps\": [\"x\", "),
                "pipeline.json: step #1: expected an object like {\"name\": \"my-step\", \"type\": \"command\", \"command\": [\"true\"]}, got the string \"x\"".into(),
            ),
            (
                GOOD.replace("\"pattern\"", "\"patern\""),
                "pipeline.json: dataset \"images\": unknown field \"patern\" (expected \"path\" or \"pattern\")".into(),
            ),
            (
                GOOD.replace("\"path\": \"data\"", "\"path\": 7"),
                "pipeline.json: dataset \"images\": field \"path\": expected a string, got 7".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\"", "\"type\": \"files\""),
                "pipeline.json: dataset \"images\": field \"type\": expected \"file\", \"tabular\" or \"reference\", got the string \"files\"".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\", \"path\": \"data\", \"pattern\": \"**/*.txt\"", "\"type\": \"tabular\", \"path\": [\"a.csv\", 2]"),
                "pipeline.json: dataset \"images\": field \"path[1]\": expected a string, got 2".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\", \"path\": \"data\", \"pattern\": \"**/*.txt\"", "\"type\": \"tabular\", \"path\": {}"),
                "pipeline.json: dataset \"images\": field \"path\": expected a path or a list of paths, got an object".into(),
            ),
            (
                GOOD.replace("\"type\": \"file\", \"path\": \"data\", \"pattern\": \"**/*.txt\"", "\"type\": \"tabular\", \"path\": \"a.csv\", \"format\": \"xls\""),
                "pipeline.json: dataset \"images\": field \"format\": expected \"csv\" or \"jsonl\", got the string \"xls\"".into(),
            ),
            (
                GOOD.replace("\"datasets\": {", "\"datasets\": {\"other\": 5, "),
                "pipeline.json: dataset \"other\": expected an object like {\"type\": \"file\", \"path\": \"data\"}, got 5".into(),
            ),
            (
                GOOD.replace("\"threshold\": 0.5", "\"threshold\": -1e400"),
                "pipeline.json: parameter \"threshold\": expected a number that fits in 64 bits, got -1e400 (line 3, column 35), which is out of range".into(),
            ),
            (
                GOOD.replace("\"name\": \"batch-scoring\"", "\"name\": 5"),
                "pipeline.json: field \"name\": expected a string, got 5".into(),
            ),
            (
                GOOD.replace("\"name\": \"batch-scoring\",", ""),
                "pipeline.json: missing field \"name\"".into(),
            ),
            (
                GOOD.replace("\"parameters\": {\"threshold\": 0.5}", "\"parameters\": [0.5]"),
                "pipeline.json: field \"parameters\": expected an object, got a list".into(),
            ),
            (
                GOOD.replace("\"datasets\"", "\"dataset\""),
                "pipeline.json: unknown field \"dataset\" (expected one of \"name\", \"parameters\", \"datasets\", \"steps\")".into(),
            ),
            (
                GOOD.replace("\"steps\": [", "\"steps\": {\"x\": [").replace("]\n    }", "]}\n    }"),
                "pipeline.json: field \"steps\": expected a list, got an object".into(),
            ),
            (
                GOOD.replace("\"error_threshold\": 10,", "\"error_threshold\": 10 10,"),
                "pipeline.json: invalid JSON (inside \"steps[0].parallel_run_config\"): expected \",\" or \"}\" at line 9 column 58".into(),
            ),
            (
                "\"spec\"".into(),
                "pipeline.json: the spec must be a JSON object with \"name\" and \"steps\", got the string \"spec\"".into(),
            ),
        ];
        for (text, want) in cases {
            assert_ne!(text, GOOD, "the case must change the spec: {want}");
            assert_eq!(err_of(&text), want);
        }
    }

    /// A spec that sets every field of every struct of the spec (two parallel_run steps, as
    /// entry_script and entry_command exclude each other).
    const ALL_FIELDS: &str = r#"{"name": "all-fields",
     "parameters": {"n": 3},
     "datasets": {
       "files": {"type": "file", "path": "data", "pattern": "*.txt"},
       "rows": {"type": "tabular", "path": ["data/a.csv"], "format": "csv"},
       "model": {"type": "reference", "path": "data"}},
     "steps": [
      {"name": "by-batch", "type": "parallel_run", "inputs": ["files"], "side_inputs": ["model"],
       "output": "out1", "arguments": ["--n", "{params.n}"], "allow_reuse": true, "run_after": [],
       "parallel_run_config": {"source_directory": "scripts", "entry_script": "score.py",
         "mini_batch_size": "5", "error_threshold": 0, "allowed_failed_count": 1,
         "allowed_failed_percent": 10.0, "output_action": "append_row",
         "environment_variables": {"A": "1"}, "env_passthrough": ["HOME"],
         "append_row_file_name": "rows.txt",
         "append_row_format": "csv", "process_count_per_node": 1, "node_count": 1,
         "run_invocation_timeout": 5, "run_max_try": 1, "environment": "python3",
         "logging_level": "INFO", "description": "d"}},
      {"name": "by-key", "type": "parallel_run", "inputs": ["rows"], "output": "out2",
       "parallel_run_config": {"entry_command": ["python3", "w.py"], "partition_keys": ["k"],
         "error_threshold": -1}},
      {"name": "cmd", "type": "command", "command": ["true", "{inputs.a}", "{outputs.o}"],
       "source_directory": "scripts", "inputs": {"a": "out1"}, "outputs": ["o"],
       "environment_variables": {"B": "2"}, "env_passthrough": ["USER"], "allow_reuse": false,
       "run_after": ["by-key"]}
     ]}"#;

    /// Every object of `ALL_FIELDS` with the kind of struct it is, its owner and its path.
    fn all_field_objects(root: &Value) -> Vec<(String, String, String)> {
        // (struct kind, who, path prefix of its fields)
        let mut out = vec![("top".to_string(), String::new(), String::new())];
        for (name, d) in root["datasets"].as_object().expect("datasets") {
            let kind = d["type"].as_str().expect("type");
            out.push((
                format!("dataset {kind}"),
                format!("dataset {name:?}"),
                format!("datasets.{name}"),
            ));
        }
        for (i, st) in root["steps"].as_array().expect("steps").iter().enumerate() {
            let who = format!("step {:?}", st["name"].as_str().expect("name"));
            let kind = st["type"].as_str().expect("type");
            out.push((format!("step {kind}"), who.clone(), format!("steps.{i}")));
            if kind == "parallel_run" {
                out.push((
                    "parallel_run_config".into(),
                    who,
                    format!("steps.{i}.parallel_run_config"),
                ));
            }
        }
        out
    }

    fn object_at<'a>(root: &'a mut Value, path: &str) -> &'a mut serde_json::Map<String, Value> {
        let mut v = root;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            v = match seg.parse::<usize>() {
                Ok(i) => &mut v[i],
                Err(_) => &mut v[seg],
            };
        }
        v.as_object_mut().expect("an object")
    }

    /// Every field of every step type, dataset type and the top level, given a value of the
    /// wrong type, gives one sentence: file, owner, field path, what was expected, what came.
    #[test]
    fn every_field_names_itself_when_its_type_is_wrong() {
        assert_eq!(err_of(ALL_FIELDS), "ok");
        let root: Value = serde_json::from_str(ALL_FIELDS).expect("json");
        let mut fields_by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut checked = 0;
        for (kind, who, prefix) in all_field_objects(&root) {
            let keys: Vec<String> = {
                let mut r = root.clone();
                object_at(&mut r, &prefix).keys().cloned().collect()
            };
            for key in keys.iter().filter(|k| *k != "type") {
                fields_by_kind
                    .entry(kind.clone())
                    .or_default()
                    .insert(key.clone());
                let mut r = root.clone();
                let obj = object_at(&mut r, &prefix);
                let (bad, got) = if obj[key].is_object() {
                    (serde_json::json!([]), "an empty list")
                } else {
                    (serde_json::json!({}), "an object")
                };
                obj.insert(key.clone(), bad);
                let e = err_of(&r.to_string());
                // The field path inside its owner: "parallel_run_config.X" within a step.
                let field = if kind == "parallel_run_config" {
                    format!("parallel_run_config.{key}")
                } else {
                    key.clone()
                };
                let who = if key == "name" && kind.starts_with("step") {
                    let i: usize = prefix["steps.".len()..].parse().expect("index");
                    format!("step #{}", i + 1)
                } else {
                    who.clone()
                };
                let head = if who.is_empty() {
                    format!("pipeline.json: field {field:?}: expected ")
                } else {
                    format!("pipeline.json: {who}: field {field:?}: expected ")
                };
                assert!(
                    e.starts_with(&head)
                        && e.ends_with(&format!(", got {got}"))
                        && e.lines().count() == 1,
                    "{kind} field {key:?}: {e}"
                );
                checked += 1;
            }
        }
        // ALL_FIELDS really sets every field: compare with the lists of known fields that an
        // unknown field brings.
        for (kind, _, prefix) in all_field_objects(&root) {
            let mut r = root.clone();
            object_at(&mut r, &prefix).insert("zzz".into(), Value::Null);
            let e = err_of(&r.to_string());
            let listed: BTreeSet<String> = e
                .split_once("(expected ")
                .map(|(_, l)| l)
                .unwrap_or("")
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            assert!(!listed.is_empty(), "{kind}: {e}");
            assert_eq!(
                fields_by_kind.get(&kind),
                Some(&listed),
                "{kind}: ALL_FIELDS must set every field"
            );
        }
        assert!(checked > 40, "{checked}");
    }

    #[test]
    fn every_out_of_range_number_is_reported_where_it_is() {
        let text = "{\"name\": \"p\", \"steps\": [\n {\"name\": \"aaa\", \"type\": \"parallel_run\", \"inputs\": [],\n  \"parallel_run_config\": {\"entry_script\": \"a.py\", \"error_threshold\": 1e309, \"run_max_try\": 123456789012345678901234567890e300}}]}";
        assert_eq!(
            err_of(text),
            "pipeline.json: step \"aaa\": field \"parallel_run_config.error_threshold\": expected a number that fits in 64 bits, got 1e309 (line 3, column 70), which is out of range\n\
             pipeline.json: step \"aaa\": field \"parallel_run_config.run_max_try\": expected a number that fits in 64 bits, got 123456789012345678901234567890e300 (line 3, column 92), which is out of range"
        );
    }

    #[test]
    fn a_broken_step_does_not_make_its_readers_fail_too() {
        let bad = GOOD.replace("\"mini_batch_size\": \"5\"", "\"mini_batch_size\": 5.5");
        let e = err_of(&bad);
        assert!(!e.contains("unknown data"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let bad = GOOD.replace("\"path\": \"data\"", "\"path\": 7");
        let e = err_of(&bad);
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn cycles_are_named() {
        let text = r#"{"name": "p", "steps": [
          {"name": "aaa", "type": "command", "command": ["true"], "inputs": {"x": "c"}, "outputs": ["a"]},
          {"name": "bbb", "type": "command", "command": ["true"], "inputs": {"x": "a"}, "outputs": ["b"]},
          {"name": "ccc", "type": "command", "command": ["true"], "inputs": {"x": "b"}, "outputs": ["c"]}
        ]}"#;
        assert!(
            err_of(text).contains("aaa -> bbb -> ccc -> aaa"),
            "{}",
            err_of(text)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_spec(&text, "fuzz.json", Path::new("/nonexistent"));
        }

        #[test]
        fn mutated_specs_never_panic(cut in 0usize..1200, insert in ".{0,8}") {
            let mut s = GOOD.to_string();
            let at = s.char_indices().map(|(i, _)| i).nth(cut % GOOD.chars().count()).unwrap_or(0);
            s.insert_str(at, &insert);
            if let Err(e) = parse_spec(&s, "fuzz.json", Path::new("/nonexistent")) {
                for m in &e.messages {
                    proptest::prop_assert!(m.starts_with("fuzz.json: "), "{}", m);
                    proptest::prop_assert!(!m.contains("did not match any variant"), "{}", m);
                }
            }
        }
    }
}
