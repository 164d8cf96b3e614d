//! What [`FnStep`](crate::FnStep) and [`CommandStep`](crate::CommandStep) declare alike — ports,
//! parameters, reuse, ordering — and the builder methods that fill it in, written once
//! ([`port_methods!`]); and the environment methods that `CommandStep` and
//! [`ParallelRunConfigBuilder`](crate::ParallelRunConfigBuilder) share ([`env_methods!`]).

use stepgraph_engine::{InputPortBinding, ModuleDefBuilder, OutputPortBinding, PipelineParameter};

/// A step's declared ports, parameters, reuse and `run_after` steps.
#[derive(Debug, Clone)]
pub(crate) struct StepPorts {
    /// Input ports and what they read.
    pub(crate) inputs: Vec<InputPortBinding>,
    /// Output ports and the data they produce.
    pub(crate) outputs: Vec<OutputPortBinding>,
    /// Pipeline parameters the step reads.
    pub(crate) params: Vec<PipelineParameter>,
    /// Reuse cached outputs when nothing changed.
    pub(crate) allow_reuse: bool,
    /// Steps that must finish first, without a data dependency.
    pub(crate) run_after: Vec<String>,
}

impl Default for StepPorts {
    /// No ports, reuse allowed (Azure's default).
    fn default() -> Self {
        StepPorts {
            inputs: Vec::new(),
            outputs: Vec::new(),
            params: Vec::new(),
            allow_reuse: true,
            run_after: Vec::new(),
        }
    }
}

impl StepPorts {
    /// `builder` with these ports, parameters (`params`: the declared ones and any the step
    /// adds), reuse and ordering.
    pub(crate) fn declare(
        &self,
        builder: ModuleDefBuilder,
        params: Vec<PipelineParameter>,
    ) -> ModuleDefBuilder {
        builder
            .inputs(self.inputs.clone())
            .outputs(self.outputs.clone())
            .param_defs(params)
            .allow_reuse(self.allow_reuse)
            .run_after(self.run_after.clone())
    }
}

/// The builder methods of a step with a `ports: StepPorts` field: `input`, `output`, `param`,
/// and [`order_methods!`]' `allow_reuse`, `run_after`. Inputs and outputs take data by value or by reference
/// (`&texts`): pipelines are wired by values.
macro_rules! port_methods {
    () => {
        /// Read `source` (a `PipelineData`, `FileDataset`, `TabularDataset` or `DataReference`,
        /// or a reference to one) on input port `port`.
        pub fn input(
            mut self,
            port: impl Into<String>,
            source: impl Into<stepgraph_engine::DataSource>,
        ) -> Self {
            self.ports
                .inputs
                .push(stepgraph_engine::InputPortBinding::new(port, source));
            self
        }

        /// Produce `data` (a `PipelineData` or a reference to one) on output port `port`.
        pub fn output(
            mut self,
            port: impl Into<String>,
            data: impl Into<stepgraph_engine::PipelineData>,
        ) -> Self {
            self.ports
                .outputs
                .push(stepgraph_engine::OutputPortBinding::new(port, data.into()));
            self
        }

        /// Read pipeline parameter `p` (it becomes part of the fingerprint).
        pub fn param(mut self, p: impl Into<stepgraph_engine::PipelineParameter>) -> Self {
            self.ports.params.push(p.into());
            self
        }

        $crate::ports::order_methods!(ports);
    };
}

/// `allow_reuse` and `run_after` for a builder whose field `$field` has `allow_reuse: bool`
/// and `run_after: Vec<String>`.
macro_rules! order_methods {
    ($field:ident) => {
        /// Reuse cached outputs when nothing changed (default true, as on Azure).
        pub fn allow_reuse(mut self, allow: bool) -> Self {
            self.$field.allow_reuse = allow;
            self
        }

        /// Run after step `name`, without a data dependency.
        pub fn run_after(mut self, name: impl Into<String>) -> Self {
            self.$field.run_after.push(name.into());
            self
        }
    };
}

/// The environment methods of a builder with fields `$vars: BTreeMap<String, String>` and
/// `$passthrough: Vec<String>`: `$set(key, value)` and `env_passthrough(names)`, both part of
/// the fingerprint. `$who` names the processes in the docs.
macro_rules! env_methods {
    ($set:ident, $vars:ident, $passthrough:ident, $who:literal) => {
        #[doc = concat!("Set an environment variable for ", $who, " (part of the fingerprint).")]
        pub fn $set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.$vars.insert(key.into(), value.into());
            self
        }

        #[doc = concat!(
            "Pass the caller's values of these environment variables through to ", $who,
            " (their values are hashed into the fingerprint, so a changed value reruns the step)."
        )]
        pub fn env_passthrough<S: Into<String>>(
            mut self,
            names: impl IntoIterator<Item = S>,
        ) -> Self {
            self.$passthrough
                .extend(names.into_iter().map(Into::into));
            self
        }
    };
}

pub(crate) use env_methods;
pub(crate) use order_methods;
pub(crate) use port_methods;
