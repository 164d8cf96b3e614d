//! [`ParallelRunStepBuilder`]: the Rust form of [`ParallelRunStep`] (Azure's seven positional
//! arguments are [`ParallelRunStep::new`]).

use stepgraph_engine::{
    Argument, BuildContext, BuildError, DataSource, Model, PipelineData, Step as _,
};

use super::config::ParallelRunConfig;
use super::step::ParallelRunStep;
use crate::ports::order_methods;

impl ParallelRunStep {
    /// The Rust form: a step `name` running `parallel_run_config`, its inputs, output and
    /// options given by name. [`ParallelRunStepBuilder::build`] checks the step as the
    /// pipeline will.
    pub fn builder(
        name: impl Into<String>,
        parallel_run_config: ParallelRunConfig,
    ) -> ParallelRunStepBuilder {
        ParallelRunStepBuilder {
            step: ParallelRunStep::new(
                name,
                parallel_run_config,
                Vec::new(),
                None,
                Vec::new(),
                Vec::new(),
                true,
            ),
            outputs_given: 0,
        }
    }
}

/// Builds a [`ParallelRunStep`] ([`ParallelRunStep::builder`]). Data is passed by value or by
/// reference (`&texts`): pipelines are wired by values.
#[derive(Debug, Clone)]
#[must_use]
pub struct ParallelRunStepBuilder {
    step: ParallelRunStep,
    outputs_given: usize,
}

impl ParallelRunStepBuilder {
    /// A main input, partitioned into mini-batches (Azure's `inputs` list, in order). All main
    /// inputs are file datasets, or all tabular datasets of one format, or upstream data.
    pub fn input(mut self, source: impl Into<DataSource>) -> Self {
        self.step.inputs.push(source.into());
        self
    }

    /// A side input: handed whole to every worker, never partitioned (Azure's `side_inputs`).
    pub fn side_input(mut self, source: impl Into<DataSource>) -> Self {
        self.step.side_inputs.push(source.into());
        self
    }

    /// The output: where the gathered rows go (required unless `output_action` is
    /// `summary_only`). A step has one output.
    pub fn output(mut self, data: impl Into<PipelineData>) -> Self {
        self.step.output = Some(data.into());
        self.outputs_given += 1;
        self
    }

    /// Arguments passed to the entry script (`{params.X}` forms for pipeline parameters).
    pub fn arguments<A: Into<Argument>>(mut self, arguments: impl IntoIterator<Item = A>) -> Self {
        self.step
            .arguments
            .extend(arguments.into_iter().map(Into::into));
        self
    }

    /// Read model `model` (Azure's `Model.get_model_path(name)` in the entry script): see
    /// [`ParallelRunStep::model`].
    pub fn model(mut self, model: Model) -> Self {
        self.step.models.push(model);
        self
    }

    /// Run on `compute`: see [`ParallelRunStep::compute`].
    pub fn compute(mut self, compute: impl Into<crate::Compute>) -> Self {
        self.step.compute = compute.into();
        self
    }

    order_methods!(step);

    /// The step, checked as the pipeline will check it: inputs of one kind, the mini-batch
    /// size against them, an output unless `summary_only`, the arguments and the entry's files.
    ///
    /// # Errors
    /// The first [`BuildError`] (its `Display` names the step and the field).
    pub fn build(self) -> Result<ParallelRunStep, BuildError> {
        if self.outputs_given > 1 {
            return Err(BuildError::InvalidConfig {
                step: self.step.name,
                field: "output".into(),
                message: format!(
                    "given {} times; a ParallelRunStep has one output",
                    self.outputs_given
                ),
            });
        }
        self.step.create_module_def(&BuildContext::default())?;
        Ok(self.step)
    }
}

#[cfg(test)]
mod tests {
    use stepgraph_engine::FileDataset;

    use super::*;
    use crate::{EntryError, EntryScript, MiniBatch, Row};

    struct Nothing;
    impl EntryScript for Nothing {
        fn run(&mut self, _: &MiniBatch) -> Result<Vec<Row>, EntryError> {
            Ok(Vec::new())
        }
    }

    fn config() -> ParallelRunConfig {
        ParallelRunConfig::builder()
            .rust_entry("v1", || Box::new(Nothing))
            .error_threshold(0)
            .build()
            .unwrap()
    }

    #[test]
    fn the_builder_makes_the_step_azure_s_constructor_makes() {
        let a = FileDataset::from_files("a", "/data/a");
        let side = FileDataset::from_files("labels", "/data/labels");
        let out = PipelineData::new("out");
        let built = ParallelRunStep::builder("s", config())
            .input(&a)
            .side_input(&side)
            .output(&out)
            .arguments(["--mode", "fast"])
            .allow_reuse(false)
            .run_after("first")
            .model(Model::new("iris-prs", "/models/iris.pkl"))
            .build()
            .unwrap();
        let azure = ParallelRunStep::new(
            "s",
            config(),
            vec![a.into()],
            Some(out),
            vec![side.into()],
            vec!["--mode".into(), "fast".into()],
            false,
        )
        .run_after("first")
        .model(Model::new("iris-prs", "/models/iris.pkl"));
        assert_eq!(format!("{built:?}"), format!("{azure:?}"));
    }

    #[test]
    fn build_checks_the_step_as_the_pipeline_does() {
        let e = ParallelRunStep::builder("s", config())
            .output(PipelineData::new("out"))
            .build()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            ParallelRunStep::new("s", config(), vec![], None, vec![], vec![], true)
                .create_module_def(&BuildContext::default())
                .unwrap_err()
                .to_string()
        );
        let e = ParallelRunStep::builder("s", config())
            .input(FileDataset::from_files("a", "/data/a"))
            .output(PipelineData::new("one"))
            .output(PipelineData::new("two"))
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("given 2 times"), "{e}");
    }
}
