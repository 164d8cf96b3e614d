//! stepgraph-cli: the `stepgraph` binary's commands, and [`main_with`], which gives a Rust
//! program that builds its pipeline in code the same subcommands for that pipeline.
//!
//! ```no_run
//! use std::process::ExitCode;
//! use stepgraph_engine::{Pipeline, PipelineData};
//! use stepgraph_steps::FnStep;
//!
//! fn main() -> ExitCode {
//!     let hello = FnStep::new("hello", "v1", |ctx| {
//!         std::fs::write(ctx.output("out")?.join("hello.txt"), "hello")?;
//!         Ok(())
//!     })
//!     .output("out", PipelineData::new("greeting"));
//!     // `my-program run`, `my-program graph --format dot`, `my-program explain`, ...
//!     // A build error is printed one problem per line, with exit code 2.
//!     stepgraph_cli::main_with(Pipeline::builder("demo").step(hello).build())
//! }
//! ```
#![deny(missing_docs)]

mod args;
mod commands;
mod metrics;
mod out;
mod progress;
mod render;
mod report;
mod svg;

use clap::Parser;
use stepgraph_engine::{BuildErrors, Pipeline};

pub use args::{parse_size, CacheAction, Cli, Command, GcArgs, GraphFormat, RunArgs, RunsAction};

/// Exit codes: 0 ok, 1 a step failed, 2 bad input (or the store cannot be used).
pub mod exit {
    /// Everything reused or ran.
    pub const OK: i32 = 0;
    /// A step failed.
    pub const STEP_FAILED: i32 = 1;
    /// Bad input: spec, arguments, store.
    pub const BAD_INPUT: i32 = 2;
}

/// Where the pipeline comes from.
pub(crate) enum Source {
    /// Loaded from a spec file given on the command line.
    Spec,
    /// Built in code by the calling program.
    Built(Box<Pipeline>),
}

/// Parse the process arguments, run the `stepgraph` binary's command, and exit.
pub fn main() -> ! {
    let code = run_cli(Cli::parse(), Source::Spec);
    std::process::exit(code)
}

/// What [`main_with`] accepts: a built [`Pipeline`], or what `PipelineBuilder::build` returned
/// (so build errors get the CLI's treatment: one problem per line, exit code 2).
pub trait IntoPipeline {
    /// The pipeline, or every problem found building it.
    ///
    /// # Errors
    /// The build errors, when there are any.
    fn into_pipeline(self) -> Result<Pipeline, BuildErrors>;
}

impl IntoPipeline for Pipeline {
    fn into_pipeline(self) -> Result<Pipeline, BuildErrors> {
        Ok(self)
    }
}

impl IntoPipeline for Result<Pipeline, BuildErrors> {
    fn into_pipeline(self) -> Result<Pipeline, BuildErrors> {
        self
    }
}

/// Give `pipeline` the stepgraph subcommands (run, graph, status, explain, runs, outputs, get,
/// logs, cache, validate) with the same flags as the binary, parse the process arguments and run. Returns
/// the exit code for `main` to return: 0 ok, 1 a step failed, 2 bad input (build errors
/// included, printed one per line).
pub fn main_with(pipeline: impl IntoPipeline) -> std::process::ExitCode {
    let code = run_built(pipeline, Cli::parse);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `main_with` without the process: build errors are printed and give 2 before any argument
/// is parsed.
fn run_built(pipeline: impl IntoPipeline, cli: impl FnOnce() -> Cli) -> i32 {
    match pipeline.into_pipeline() {
        Ok(p) => run_cli(cli(), Source::Built(Box::new(p))),
        Err(errors) => {
            for e in &errors.0 {
                out::errln!("error: {e}");
            }
            exit::BAD_INPUT
        }
    }
}

/// Run `cli` and return the exit code (errors are printed as one line each on stderr).
///
/// A closed stdout (`stepgraph logs RUN STEP | head -1`) ends the command quietly with exit 0:
/// the reader has what it wanted.
pub(crate) fn run_cli(cli: Cli, source: Source) -> i32 {
    let result = commands::dispatch(cli, source).and_then(|code| match out::flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code),
        r => r.map(|()| code).map_err(anyhow::Error::from),
    });
    match result {
        Ok(code) => code,
        Err(e) if out::is_broken_pipe(&e) => exit::OK,
        Err(e) => {
            out::errln!("error: {}", out::error_line(&e));
            exit::BAD_INPUT
        }
    }
}

/// Run the CLI on explicit arguments (the first is the program name); returns the exit code.
/// For embedding and tests.
pub fn run_with_args<I, T>(args: I, pipeline: Option<Pipeline>) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // clap prints help and errors itself and ignores a closed pipe.
            let _ = e.print();
            return if e.use_stderr() {
                exit::BAD_INPUT
            } else {
                exit::OK
            };
        }
    };
    let source = match pipeline {
        Some(p) => Source::Built(Box::new(p)),
        None => Source::Spec,
    };
    run_cli(cli, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_given_to_main_with_exit_2_without_parsing_arguments() {
        let errors = BuildErrors(vec![stepgraph_engine::BuildError::DuplicateStepName {
            step: "a".into(),
        }]);
        let code = run_built(Err::<Pipeline, _>(errors), || {
            panic!("arguments must not be parsed when the pipeline did not build")
        });
        assert_eq!(code, exit::BAD_INPUT);
    }
}
