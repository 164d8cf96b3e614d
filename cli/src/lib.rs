//! stepgraph-cli: the `stepgraph` binary's commands, and [`main_with`], which gives a Rust
//! program that builds its pipeline in code the same subcommands for that pipeline.
//!
//! ```no_run
//! use stepgraph_engine::{Pipeline, PipelineData};
//! use stepgraph_steps::FnStep;
//!
//! let hello = FnStep::new("hello", "v1", |ctx| {
//!     std::fs::write(ctx.output("out")?.join("hello.txt"), "hello")?;
//!     Ok(())
//! })
//! .output("out", PipelineData::new("greeting"));
//! let pipeline = Pipeline::builder("demo").step(hello).build()?;
//! // `my-program run`, `my-program graph --format dot`, `my-program explain`, ...
//! stepgraph_cli::main_with(pipeline);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod args;
mod commands;
mod out;
mod progress;
mod render;

use clap::Parser;
use stepgraph_engine::Pipeline;

pub use args::Cli;

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

/// Give `pipeline` the stepgraph subcommands (run, graph, status, explain, runs, logs, cache,
/// validate) with the same flags as the binary, parse the process arguments, run, and exit.
pub fn main_with(pipeline: Pipeline) -> ! {
    let code = run_cli(Cli::parse(), Source::Built(Box::new(pipeline)));
    std::process::exit(code)
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
