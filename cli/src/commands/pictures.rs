//! Pictures: `graph -o FILE` and `report` (one self-contained HTML page about a run).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use stepgraph_engine::{StepStatus, Store};

use crate::exit;
use crate::out::{capture, outln};
use crate::report::{read_done, report_html};

/// Run `f`; with `output`, write what it prints to that file instead of stdout.
pub(super) fn with_output(output: Option<&Path>, f: impl FnOnce() -> Result<i32>) -> Result<i32> {
    let Some(path) = output else {
        return f();
    };
    let (code, text) = capture(f);
    let code = code?;
    fs_err::write(path, text)?;
    Ok(code)
}

/// The steps that failed in the latest run of `pipeline` and would run again: their status
/// says so (`failed in run ID; would run (…)`), so the SVG colours them as failed.
pub(super) fn mark_failed(
    store: &Store,
    pipeline: &str,
    statuses: &mut crate::render::Statuses,
) -> Result<()> {
    let Some(latest) = store.runs()?.into_iter().find(|r| r.pipeline == pipeline) else {
        return Ok(());
    };
    for s in latest
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
    {
        if let Some(status) = statuses.get_mut(&s.name) {
            if status.starts_with("would run") {
                *status = format!("failed in run {}; {status}", latest.id);
            }
        }
    }
    Ok(())
}

/// `report [RUN_ID] -o FILE`: the latest run by default.
pub(super) fn cmd_report(store: &Store, run: Option<&str>, output: &Path) -> Result<i32> {
    let rec = match run {
        Some(id) => store
            .run_get(id)?
            .ok_or_else(|| anyhow!("unknown run {id:?} (see `stepgraph runs`)"))?,
        None => store.runs()?.into_iter().next().ok_or_else(|| {
            anyhow!(
                "no runs in {} yet: `stepgraph run SPEC` first",
                store.root().display()
            )
        })?,
    };
    let layout = store.run_layout(&rec.id);
    let done: BTreeMap<String, _> = rec
        .steps
        .iter()
        .map(|s| {
            let events = layout.log_dir(&s.name).join("sys").join("events.txt");
            (s.name.clone(), read_done(&events))
        })
        .collect();
    let html = report_html(&rec, &done)?;
    fs_err::write(output, html).with_context(|| "cannot write the report")?;
    outln!(
        "wrote {} (run {} of {}: {})",
        output.display(),
        rec.id,
        rec.pipeline,
        rec.status.as_str()
    )?;
    Ok(exit::OK)
}
