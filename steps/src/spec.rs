//! The JSON pipeline spec (DESIGN.md section 8): parsed with serde into a [`Pipeline`].
//! Every error names the file, the step and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use stepgraph_engine::{
    Argument, DataReference, DataSource, FileDataset, Pipeline, PipelineData, PipelineParameter,
    TabularDataset, TabularFormat,
};

use crate::parallel_run::{AppendRowFormat, OutputAction, ParallelRunConfig, ParallelRunStep};
use crate::placeholders;
use crate::CommandStep;

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

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum DatasetSpec {
    #[serde(rename = "file")]
    File {
        path: String,
        pattern: Option<String>,
    },
    #[serde(rename = "tabular")]
    Tabular {
        path: OneOrMany,
        format: Option<String>,
    },
    #[serde(rename = "reference")]
    Reference { path: String },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrInt {
    S(String),
    I(u64),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum StepSpec {
    #[serde(rename = "parallel_run")]
    ParallelRun {
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
    },
    #[serde(rename = "command")]
    Command {
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
    },
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
    mini_batch_size: Option<StringOrInt>,
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::one(format!("{}: cannot read: {e}", path.display())))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let base = std::path::absolute(&base).unwrap_or(base);
    parse_spec(&text, &path.display().to_string(), &base)
}

/// Parse spec `text` (named `file` in messages), resolving relative paths against `base`.
///
/// # Errors
/// As [`load_spec`].
pub fn parse_spec(text: &str, file: &str, base: &Path) -> Result<Pipeline, SpecError> {
    let raw: Value = serde_json::from_str(text)
        .map_err(|e| SpecError::one(format!("{file}: invalid JSON: {}", serde_msg(&e))))?;
    if !raw.is_object() {
        return Err(SpecError::one(format!(
            "{file}: the spec must be a JSON object with \"name\" and \"steps\""
        )));
    }
    let spec: SpecFile = serde_json::from_value(raw)
        .map_err(|e| SpecError::one(format!("{file}: {}", serde_msg(&e))))?;
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
    for (name, raw) in &spec.datasets {
        match serde_json::from_value::<DatasetSpec>(raw.clone()) {
            Err(e) => errors.push(format!("{file}: dataset {name:?}: {}", serde_msg(&e))),
            Ok(DatasetSpec::File { path, pattern }) => {
                let mut ds = FileDataset::from_files(name.clone(), resolve(&path));
                if let Some(p) = pattern {
                    ds = ds.with_pattern(p);
                }
                datasets.insert(name.clone(), ds.into());
            }
            Ok(DatasetSpec::Tabular { path, format }) => {
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
                            "{file}: dataset {name:?}: field \"format\" must be \"csv\" or \"jsonl\", not {other:?}"
                        ));
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
            Ok(DatasetSpec::Reference { path }) => {
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
        let label = raw
            .get("name")
            .and_then(Value::as_str)
            .map(|n| format!("step {n:?}"))
            .unwrap_or_else(|| format!("step #{}", i + 1));
        match serde_json::from_value::<StepSpec>(raw.clone()) {
            Err(e) => errors.push(format!("{file}: {label}: {}", serde_msg(&e))),
            Ok(s) => {
                let (name, outs): (&String, Vec<&String>) = match &s {
                    StepSpec::ParallelRun { name, output, .. } => (name, output.iter().collect()),
                    StepSpec::Command { name, outputs, .. } => (name, outputs.iter().collect()),
                };
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
        } else if outputs.contains_key(data) {
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
            StepSpec::ParallelRun {
                name,
                inputs,
                side_inputs,
                output,
                arguments,
                allow_reuse,
                run_after,
                parallel_run_config,
            } => {
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
            StepSpec::Command {
                name,
                command,
                source_directory,
                inputs,
                outputs: outs,
                environment_variables,
                env_passthrough,
                allow_reuse,
                run_after,
            } => {
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
        b = b.mini_batch_size(match m {
            StringOrInt::S(s) => s,
            StringOrInt::I(i) => i.to_string(),
        });
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

/// serde's message with backticks turned into quotes: `unknown field "x", expected ...`.
fn serde_msg(e: &serde_json::Error) -> String {
    // serde_json appends " at line L column C" for syntax errors; it is kept, it helps.
    e.to_string().replace('`', "\"")
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
    fn the_design_example_parses() {
        assert_eq!(err_of(GOOD), "ok");
    }

    #[test]
    fn unknown_field_names_file_step_and_field() {
        let bad = GOOD.replace("\"mini_batch_size\"", "\"mini_batchsize\"");
        let e = err_of(&bad);
        assert!(
            e.starts_with("pipeline.json: step \"score-images\": unknown field \"mini_batchsize\""),
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
                "invalid type",
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
                "unknown variant \"shell\"",
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
            let _ = parse_spec(&s, "fuzz.json", Path::new("/nonexistent"));
        }
    }
}
