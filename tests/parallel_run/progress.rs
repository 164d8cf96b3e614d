//! Progress events of a ParallelRunStep.

use stepgraph_engine::Event;

use crate::common::Workspace;
use crate::parallel_run::support::{docs, python_entry, ran, run_docs, UsualSetUp, STEP};

#[test]
fn progress_events_end_with_every_mini_batch_done() {
    let ws = Workspace::new();
    let data = docs(ws.path(), 9);
    let cfg = python_entry(
        ws.path(),
        "ok.py",
        "import os\n\ndef run(mini_batch):\n    return [os.path.basename(p) for p in mini_batch]\n",
    )
    .usual("2");
    let (run, sink) = run_docs(&ws, cfg, data);
    ran(&run);
    let progress: Vec<(u64, u64, u64)> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Progress {
                step,
                done,
                total,
                items,
                ..
            } if step == STEP => Some((done, total, items)),
            _ => None,
        })
        .collect();
    assert_eq!(progress.first(), Some(&(0, 5, 0)));
    assert_eq!(progress.last(), Some(&(5, 5, 9)));
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0),
        "done never goes down: {progress:?}"
    );
}
