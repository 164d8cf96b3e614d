//! Building a pipeline: every validation error, one test each (most as rows of `refused!`),
//! all reported at once.

use std::error::Error;

use stepgraph_engine::{BuildError, BuildErrors, Pipeline, PipelineData, PipelineParameter};
use stepgraph_steps::{CommandStep, FnStep};

type TestResult = Result<(), Box<dyn Error>>;

fn noop(name: &str) -> FnStep {
    FnStep::new(name, "v1", |_| Ok(()))
}

fn build_errors(
    builder: stepgraph_engine::PipelineBuilder,
) -> Result<Vec<BuildError>, Box<dyn Error>> {
    match builder.build() {
        Ok(p) => Err(format!("expected build errors, got a pipeline {:?}", p.step_names()).into()),
        Err(BuildErrors(errors)) => Ok(errors),
    }
}

/// One test per row: building the pipeline fails with exactly the errors listed.
macro_rules! refused {
    ($($name:ident: $builder:expr => $expected:expr;)*) => {$(
        #[test]
        fn $name() -> TestResult {
            assert_eq!(build_errors($builder)?, $expected);
            Ok(())
        }
    )*};
}

refused! {
    duplicate_step_name_is_reported_once:
        Pipeline::builder("p")
            .step(noop("twice"))
            .step(noop("twice"))
            .step(noop("twice"))
        => [BuildError::DuplicateStepName {
            step: "twice".into()
        }];
    input_without_producer_is_reported:
        Pipeline::builder("p").step(noop("reader").input("data", PipelineData::new("ghost")))
        => [BuildError::NoProducer {
            step: "reader".into(),
            port: "data".into(),
            data: "ghost".into(),
        }];
    data_with_two_producers_is_reported:
        Pipeline::builder("p")
            .step(noop("zeta").output("out", PipelineData::new("shared")))
            .step(noop("alpha").output("out", PipelineData::new("shared")))
            .step(noop("reader").input("data", PipelineData::new("shared")))
        => [BuildError::MultipleProducers {
            data: "shared".into(),
            steps: vec!["alpha".into(), "zeta".into()],
        }];
    run_after_unknown_step_is_reported:
        Pipeline::builder("p")
            .step(noop("first"))
            .step(noop("second").run_after("first").run_after("nowhere"))
        => [BuildError::UnknownStep {
            step: "second".into(),
            field: "run_after".into(),
            name: "nowhere".into(),
        }];
    command_placeholder_of_undeclared_parameter_is_reported:
        Pipeline::builder("p").step(
            CommandStep::new("cmd", ["echo", "{params.tag}", "{params.x}"])
                .param(PipelineParameter::new("tag", "alpha")),
        )
        => [BuildError::UnknownReference {
            step: "cmd".into(),
            field: "command".into(),
            what: "parameter".into(),
            name: "x".into(),
        }];
    command_placeholder_of_unknown_input_is_reported:
        Pipeline::builder("p")
            .step(noop("maker").output("out", PipelineData::new("made")))
            .step(
                CommandStep::new("cmd", ["cat", "{inputs.data}", "{inputs.y}"])
                    .input("data", PipelineData::new("made")),
            )
        => [BuildError::UnknownReference {
            step: "cmd".into(),
            field: "command".into(),
            what: "input".into(),
            name: "y".into(),
        }];
    step_reading_its_own_output_is_a_cycle:
        Pipeline::builder("p").step(
            noop("selfish")
                .input("in", PipelineData::new("loop"))
                .output("out", PipelineData::new("loop")),
        )
        => [BuildError::Cycle {
            steps: vec!["selfish".into(), "selfish".into()]
        }];
}

#[test]
fn step_names_breaking_the_azure_rule_are_each_reported() -> TestResult {
    let too_long = "a".repeat(33);
    let bad = [
        "",
        "ab",
        too_long.as_str(),
        "1abc",
        "-abc",
        "Abc",
        "abC",
        "ab_c",
        "ab.c",
        "abc-",
        "äbc",
        "ab c",
    ];
    let mut builder = Pipeline::builder("p");
    for name in bad {
        builder = builder.step(noop(name));
    }
    let errors = build_errors(builder)?;
    let named: Vec<&str> = errors
        .iter()
        .map(|e| match e {
            BuildError::InvalidStepName { step, reason } => {
                assert!(!reason.is_empty(), "{step:?} has no reason");
                step.as_str()
            }
            other => panic!("unexpected error {other:?}"),
        })
        .collect();
    assert_eq!(named, bad);
    Ok(())
}

#[test]
fn repeated_invalid_step_name_is_reported_once_as_invalid_and_once_as_duplicate() -> TestResult {
    let errors = build_errors(Pipeline::builder("p").step(noop("Bad")).step(noop("Bad")))?;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(matches!(&errors[0], BuildError::InvalidStepName { step, .. } if step == "Bad"));
    assert_eq!(
        errors[1],
        BuildError::DuplicateStepName { step: "Bad".into() }
    );
    Ok(())
}

#[test]
fn step_names_at_the_edges_of_the_azure_rule_are_accepted() -> TestResult {
    let longest = "a".repeat(32);
    let p = Pipeline::builder("p")
        .step(noop("abc"))
        .step(noop("a-1"))
        .step(noop("a--9"))
        .step(noop(&longest))
        .build()?;
    assert_eq!(p.step_names().len(), 4);
    Ok(())
}

#[test]
fn cycle_through_data_is_reported_as_its_full_chain_from_the_smallest_name() -> TestResult {
    // cyc-a -> cyc-b -> cyc-c -> cyc-a, inserted out of order.
    let step = |name: &str, reads: &str, writes: &str| {
        noop(name)
            .input("in", PipelineData::new(reads))
            .output("out", PipelineData::new(writes))
    };
    let errors = build_errors(
        Pipeline::builder("p")
            .step(step("cyc-c", "from-b", "from-c"))
            .step(step("cyc-b", "from-a", "from-b"))
            .step(step("cyc-a", "from-c", "from-a")),
    )?;
    let chain = ["cyc-a", "cyc-b", "cyc-c", "cyc-a"]
        .map(String::from)
        .to_vec();
    assert_eq!(errors, [BuildError::Cycle { steps: chain }]);
    assert_eq!(
        errors[0].to_string(),
        "cycle between steps: cyc-a -> cyc-b -> cyc-c -> cyc-a"
    );
    Ok(())
}

#[test]
fn several_problems_are_reported_together() -> TestResult {
    let errors = build_errors(
        Pipeline::builder("p")
            .step(noop("dup"))
            .step(noop("dup"))
            .step(noop("Bad_Name"))
            .step(noop("orphan").input("in", PipelineData::new("ghost")))
            .step(noop("follower").run_after("nowhere")),
    )?;
    let expected = [
        BuildError::DuplicateStepName { step: "dup".into() },
        BuildError::NoProducer {
            step: "orphan".into(),
            port: "in".into(),
            data: "ghost".into(),
        },
        BuildError::UnknownStep {
            step: "follower".into(),
            field: "run_after".into(),
            name: "nowhere".into(),
        },
    ];
    for e in &expected {
        assert!(errors.contains(e), "{e:?} missing from {errors:?}");
    }
    assert!(
        errors
            .iter()
            .any(|e| matches!(e, BuildError::InvalidStepName { step, .. } if step == "Bad_Name")),
        "{errors:?}"
    );
    assert_eq!(errors.len(), 4, "{errors:?}");
    // The combined message names every problem.
    let text = BuildErrors(errors).to_string();
    for needle in ["dup", "Bad_Name", "ghost", "nowhere"] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    Ok(())
}

#[test]
fn pipeline_names_that_break_a_line_or_are_empty_are_refused() -> TestResult {
    for (name, reason) in [
        (
            "../../evil\nline",
            "must not contain control characters (newlines, tabs, escapes)",
        ),
        (
            "tab\there",
            "must not contain control characters (newlines, tabs, escapes)",
        ),
        ("  ", "must not be empty"),
    ] {
        let errors = build_errors(Pipeline::builder(name).step(noop("step-a")))?;
        assert_eq!(
            errors,
            [BuildError::InvalidPipelineName {
                name: name.into(),
                reason
            }],
            "{name:?}"
        );
    }
    let long = "p".repeat(129);
    assert_eq!(
        build_errors(Pipeline::builder(long).step(noop("step-a")))?.len(),
        1
    );
    // Spaces, capitals and other scripts are fine: the name is only printed.
    Pipeline::builder("Word Count – nightly")
        .step(noop("step-a"))
        .build()?;
    Ok(())
}

#[test]
fn empty_pipeline_builds() -> TestResult {
    let p = Pipeline::builder("empty").build()?;
    assert!(p.step_names().is_empty());
    Ok(())
}

/// A step that declares itself without Azure's sequencing ports.
struct NoPorts;

impl stepgraph_engine::Step for NoPorts {
    fn name(&self) -> &str {
        "no-ports"
    }
    fn create_module_def(
        &self,
        _: &stepgraph_engine::BuildContext,
    ) -> Result<stepgraph_engine::ModuleDef, BuildError> {
        Ok(stepgraph_engine::create_module_def(
            "test/1",
            vec![],
            vec![],
            vec![],
            false,
            true,
            Some("v1".into()),
            vec![],
        ))
    }
    fn execute(
        &self,
        _: &stepgraph_engine::StepContext<'_>,
    ) -> Result<stepgraph_engine::StepCounts, stepgraph_engine::StepError> {
        Ok(Default::default())
    }
}

#[test]
fn run_after_a_step_without_sequencing_ports_is_refused() {
    let after = FnStep::new("after", "v1", |_| Ok(())).run_after("no-ports");
    let err = match Pipeline::builder("seq").step(NoPorts).step(after).build() {
        Ok(_) => panic!("a run_after on a step without sequencing ports was accepted"),
        Err(e) => e,
    };
    assert_eq!(
        err.to_string(),
        "step \"after\": run_after \"no-ports\" needs sequencing ports, but step \"no-ports\" was declared without them"
    );
}
