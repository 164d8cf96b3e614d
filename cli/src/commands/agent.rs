//! `stepgraph agent`: one node's workers of a ParallelRunStep running on a cluster (started by
//! the step's Slurm job through `srun`; see `stepgraph_steps::run_agent`).

use std::path::PathBuf;

use anyhow::Result;
use stepgraph_steps::{run_agent, AgentOptions};

use crate::exit;

/// Run the agent until its coordinator says stop (exit 0) or the connection drops (an error).
pub(super) fn cmd_agent(connect: String, token_file: PathBuf, node: Option<String>) -> Result<i32> {
    run_agent(&AgentOptions {
        connect,
        token_file,
        node,
    })?;
    Ok(exit::OK)
}
