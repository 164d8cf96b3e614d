//! A spec step of `"type": "command"`: a [`CommandStep`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use stepgraph_engine::PipelineData;

use super::{yes, Built, Context, StepSpec};
use crate::placeholders;
use crate::CommandStep;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandSpec {
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
    environment: Option<crate::environment::Environment>,
    #[serde(default = "yes")]
    allow_reuse: bool,
    #[serde(default)]
    run_after: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    compute: Option<String>,
}

impl StepSpec for CommandSpec {
    fn name(&self) -> &str {
        &self.name
    }

    fn outputs(&self) -> Vec<&String> {
        self.outputs.iter().collect()
    }

    fn path_names(&self) -> Vec<(String, &String)> {
        self.outputs
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("outputs[{i}]"), o))
            .chain(self.inputs.keys().map(|k| ("inputs".to_string(), k)))
            .collect()
    }

    fn into_step(self: Box<Self>, cx: &Context<'_>, errors: &mut Vec<String>) -> Built {
        let names = &cx.names;
        let name = self.name;
        let mut step =
            CommandStep::new(name.clone(), self.command.clone()).allow_reuse(self.allow_reuse);
        if let Some(d) = self.source_directory {
            step = step.source_directory(cx.resolve(&d));
        }
        for (port, d) in &self.inputs {
            match names.lookup(cx.file, &name, "inputs", d) {
                Ok(s) => step = step.input(port.clone(), s),
                Err(e) => errors.push(e.to_string()),
            }
        }
        for o in self.outputs {
            step = step.output(o.clone(), PipelineData::new(o));
        }
        for (k, v) in self.environment_variables {
            step = step.env(k, v);
        }
        step = step.env_passthrough(self.env_passthrough);
        if let Some(env) = self.environment {
            let mut env = env.map_file(|f| cx.resolve(f));
            match env.load() {
                Ok(()) => step = step.environment(env),
                Err(e) => {
                    let field = match e.field() {
                        "" => "environment".to_string(),
                        f => format!("environment.{f}"),
                    };
                    errors.push(format!(
                        "{}: step {name:?}: field {field:?}: {}",
                        cx.file, e
                    ));
                }
            }
        }
        // A `{params.NAME}` placeholder in the command makes the step take that parameter.
        for p in self.command.iter().flat_map(|arg| placeholders::find(arg)) {
            if let Some(param) = cx.params.get(&p.name).filter(|_| p.namespace == "params") {
                step = step.param(param.clone());
            }
        }
        for a in self.run_after {
            step = step.run_after(a);
        }
        for m in cx.models.lookup_all(cx.file, &name, &self.models, errors) {
            step = step.model(m);
        }
        if let Some(c) = cx
            .computes
            .lookup(cx.file, &name, self.compute.as_deref(), errors)
        {
            step = step.compute(c);
        }
        Some(Arc::new(step))
    }
}
