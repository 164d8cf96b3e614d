//! A spec step of `"type": "parallel_run"`: a [`ParallelRunStep`]. Its `parallel_run_config`
//! object deserializes straight into the config's builder, which checks it.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use stepgraph_engine::{Argument, PipelineData, PipelineParameter};

use super::{yes, Built, Context, StepSpec};
use crate::parallel_run::{ParallelRunConfig, ParallelRunConfigBuilder, ParallelRunStep};
use crate::placeholders;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParallelRunSpec {
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
    #[serde(default)]
    models: Vec<String>,
    compute: Option<String>,
    parallel_run_config: Box<ParallelRunConfigBuilder>,
}

impl StepSpec for ParallelRunSpec {
    fn name(&self) -> &str {
        &self.name
    }

    fn outputs(&self) -> Vec<&String> {
        self.output.iter().collect()
    }

    fn path_names(&self) -> Vec<(String, &String)> {
        self.output
            .iter()
            .map(|o| ("output".to_string(), o))
            .collect()
    }

    /// `None` when its config is not valid.
    fn into_step(self: Box<Self>, cx: &Context<'_>, errors: &mut Vec<String>) -> Built {
        let names = &cx.names;
        let (file, name) = (cx.file, &self.name);
        let ins = names.lookup_all(file, name, "inputs", &self.inputs, errors);
        let sides = names.lookup_all(file, name, "side_inputs", &self.side_inputs, errors);
        let models = cx.models.lookup_all(file, name, &self.models, errors);
        let compute = cx
            .computes
            .lookup(file, name, self.compute.as_deref(), errors);
        let mut args = Vec::new();
        for a in &self.arguments {
            match spec_argument(a, &cx.params) {
                Ok(arg) => args.push(arg),
                Err(e) => errors.push(format!("{file}: step {name:?}: field \"arguments\": {e}")),
            }
        }
        let cfg = match config(*self.parallel_run_config, cx) {
            Ok(c) => c,
            Err((field, msg)) => {
                let field = format!("parallel_run_config.{field}");
                errors.push(format!("{file}: step {name:?}: field {field:?}: {msg}"));
                return None;
            }
        };
        let mut step = ParallelRunStep::new(
            self.name,
            cfg,
            ins,
            self.output.map(PipelineData::new),
            sides,
            args,
            self.allow_reuse,
        );
        for a in self.run_after {
            step = step.run_after(a);
        }
        for m in models {
            step = step.model(m);
        }
        if let Some(c) = compute {
            step = step.compute(c);
        }
        Some(Arc::new(step))
    }
}

/// Why an argument of a spec step is refused (its step and field are added by the caller).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ArgumentError(String);

/// `{params.NAME}` as a whole argument becomes that parameter; anything else is literal.
fn spec_argument(
    a: &str,
    params: &BTreeMap<String, PipelineParameter>,
) -> Result<Argument, ArgumentError> {
    let found = placeholders::find(a);
    if found.is_empty() {
        return Ok(Argument::Literal(a.to_string()));
    }
    for p in &found {
        if p.namespace != "params" {
            return Err(ArgumentError(format!(
                "{a:?}: only {{params.NAME}} placeholders are allowed here"
            )));
        }
        if !params.contains_key(&p.name) {
            return Err(ArgumentError(format!(
                "{a:?} refers to unknown parameter {:?}",
                p.name
            )));
        }
    }
    match (
        found.as_slice(),
        a.strip_prefix("{params.").and_then(|r| r.strip_suffix('}')),
    ) {
        ([p], Some(n)) if n == p.name => Ok(Argument::Param(params[&p.name].clone())),
        _ => Err(ArgumentError(format!(
            "{a:?}: a parameter placeholder must be the whole argument"
        ))),
    }
}

/// The config: exactly one of `entry_script` and `entry_command`, the source folder resolved
/// against the spec's folder, then the builder's rules. The error is (field, message).
fn config(
    b: ParallelRunConfigBuilder,
    cx: &Context<'_>,
) -> Result<ParallelRunConfig, (String, String)> {
    match b.given_entries() {
        (true, true) => {
            return Err((
                "entry_command".into(),
                "give entry_script or entry_command, not both".into(),
            ))
        }
        (false, false) => {
            return Err((
                "entry_script".into(),
                "is required (or entry_command)".into(),
            ))
        }
        _ => {}
    }
    b.map_source_directory(|d| cx.resolve(d))
        .map_environment_file(|f| cx.resolve(f))
        .build()
        .map_err(|e| (e.field, e.message))
}
