//! ParallelRunStep with an in-process Rust entry over a CSV: one instance per worker, rows in
//! order; errors are retried, panics replace the instance, short results count failed items.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use stepgraph_steps::parallel_run::EntryError;
use stepgraph_steps::{EntryContext, EntryScript, MiniBatch, MiniBatchData, ParallelRunConfig};

use crate::common::Workspace;
use crate::parallel_run::support::{messages, output, ran, run_csv, run_docs, sys_log, UsualSetUp};

/// What the entries of one run share with the test.
#[derive(Default)]
struct Shared {
    inits: AtomicUsize,
    /// Agent name of every init, in order.
    init_agents: Mutex<Vec<String>>,
    /// Agent names that ran a mini-batch.
    run_agents: Mutex<BTreeSet<String>>,
    /// Mini-batches whose one-off misbehaviour already happened.
    tripped: Mutex<BTreeSet<u64>>,
}

#[derive(Clone, Copy, Default)]
struct Plan {
    /// Return an error on the first try of this mini-batch.
    error_once: Option<u64>,
    /// Panic on the first try of this mini-batch.
    panic_once: Option<u64>,
    /// Leave out the last row of this mini-batch.
    short: Option<u64>,
}

struct Doubler {
    shared: Arc<Shared>,
    plan: Plan,
    agent: String,
}

impl Doubler {
    fn first_time(&self, index: u64) -> bool {
        self.shared
            .tripped
            .lock()
            .map(|mut t| t.insert(index))
            .unwrap_or(false)
    }
}

impl EntryScript for Doubler {
    fn init(&mut self, ctx: &EntryContext) -> Result<(), EntryError> {
        self.shared.inits.fetch_add(1, Ordering::SeqCst);
        self.agent = ctx.agent_name.clone();
        self.shared
            .init_agents
            .lock()
            .map_err(|_| "poisoned")?
            .push(ctx.agent_name.clone());
        Ok(())
    }

    fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<String>, EntryError> {
        let i = mini_batch.index;
        self.shared
            .run_agents
            .lock()
            .map_err(|_| "poisoned")?
            .insert(self.agent.clone());
        std::thread::sleep(std::time::Duration::from_millis(15));
        if self.plan.error_once == Some(i) && self.first_time(i) {
            return Err(format!("transient failure in mini-batch {i}").into());
        }
        if self.plan.panic_once == Some(i) && self.first_time(i) {
            panic!("boom in mini-batch {i}");
        }
        let MiniBatchData::Csv { header, records } = &mini_batch.data else {
            return Err("expected CSV rows".into());
        };
        let id = header
            .iter()
            .position(|h| h == "id")
            .ok_or("no id column")?;
        let value = header
            .iter()
            .position(|h| h == "value")
            .ok_or("no value column")?;
        let mut rows = Vec::new();
        for r in records {
            let v: i64 = r.get(value).unwrap_or_default().parse()?;
            rows.push(format!("{} {}", r.get(id).unwrap_or_default(), v * 2));
        }
        if self.plan.short == Some(i) {
            rows.pop();
        }
        Ok(rows)
    }
}

/// 20 CSV rows `id,value` (ids 0..20, value = 10 × id), cut in mini-batches of ~40 bytes.
fn run_rust(
    ws: &Workspace,
    plan: Plan,
    workers: u32,
    error_threshold: i64,
) -> (
    stepgraph_engine::RunSummary,
    stepgraph_engine::CollectSink,
    Arc<Shared>,
) {
    let csv: String = std::iter::once("id,value\n".to_string())
        .chain((0..20).map(|i| format!("{i},{}\n", i * 10)))
        .collect();
    let file = ws.write("table.csv", &csv);
    let shared = Arc::new(Shared::default());
    let for_factory = Arc::clone(&shared);
    let cfg = ParallelRunConfig::builder()
        .rust_entry("doubler-v1", move || {
            Box::new(Doubler {
                shared: Arc::clone(&for_factory),
                plan,
                agent: String::new(),
            })
        })
        .mini_batch_size("40")
        .error_threshold(error_threshold)
        .process_count_per_node(workers)
        .run_max_try(2);
    let (run, sink) = run_csv(ws, cfg, "table", vec![file]);
    (run, sink, shared)
}

fn all_rows() -> String {
    (0..20).map(|i| format!("{i} {}\n", i * 20)).collect()
}

#[test]
fn rust_entry_inits_once_per_worker_and_gathers_rows_in_order() {
    let ws = Workspace::new();
    let (run, _, shared) = run_rust(&ws, Plan::default(), 2, 0);
    let r = ran(&run);
    assert_eq!(output(&run), all_rows());
    assert_eq!((r.counts.items, r.counts.failed_items), (20, 0));
    assert!(r.counts.units > 2, "{:?}", r.counts);
    let agents = shared
        .init_agents
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    let distinct: BTreeSet<String> = agents.iter().cloned().collect();
    assert_eq!(shared.inits.load(Ordering::SeqCst), agents.len());
    assert_eq!(
        distinct.len(),
        agents.len(),
        "one init per worker: {agents:?}"
    );
    let ran = shared
        .run_agents
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    assert_eq!(distinct, ran, "every worker that ran was initialised once");
    assert!(agents.len() <= 2, "{agents:?}");
}

/// One worker running `plan`, whose one failure is retried: every row is there, nothing
/// counted failed, the entry initialised `inits` times (`why`); the step's system log is
/// returned with the events.
fn check_one_failure_retried(
    plan: Plan,
    inits: usize,
    why: &str,
) -> (String, stepgraph_engine::CollectSink) {
    let ws = Workspace::new();
    let (run, sink, shared) = run_rust(&ws, plan, 1, 0);
    let r = ran(&run);
    assert_eq!(output(&run), all_rows());
    assert_eq!((r.counts.failed_items, r.counts.failed_units), (0, 0));
    assert_eq!(shared.inits.load(Ordering::SeqCst), inits, "{why}");
    (sys_log(&run), sink)
}

#[test]
fn rust_entry_error_is_retried() {
    let plan = Plan {
        error_once: Some(1),
        ..Plan::default()
    };
    let (sys, sink) = check_one_failure_retried(plan, 1, "an error keeps the instance");
    assert!(
        sys.contains("mini-batch 1 try 1 on worker-0 failed: transient failure in mini-batch 1")
    );
    assert!(messages(&sink).contains(&"mini-batch 1 failed (try 1 of 2), retrying".to_string()));
}

#[test]
fn rust_entry_panic_is_a_died_worker_whose_instance_is_replaced() {
    let plan = Plan {
        panic_once: Some(2),
        ..Plan::default()
    };
    let (sys, _) = check_one_failure_retried(
        plan,
        2,
        "the panicking instance is replaced and the new one initialised",
    );
    assert!(
        sys.contains("mini-batch 2 try 1 on worker-0 failed: run panicked: boom in mini-batch 2"),
        "{sys}"
    );
}

#[test]
fn rust_entry_returning_fewer_rows_counts_failed_items() {
    let ws = Workspace::new();
    let plan = Plan {
        short: Some(0),
        ..Plan::default()
    };
    let (run, _, _) = run_rust(&ws, plan, 2, 1);
    let r = ran(&run);
    assert_eq!(
        (r.counts.items, r.counts.failed_items, r.counts.failed_units),
        (20, 1, 0)
    );
    // Mini-batch 0 holds rows 0..=8 (4 + 8 × 5 = 44 bytes reach the 40-byte cut at row 8);
    // it lost its last row, everything else is there, in order.
    let expected: String = all_rows()
        .lines()
        .filter(|l| *l != "8 160")
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(output(&run), expected);
    assert!(
        sys_log(&run).contains("mini-batch 0: run() returned 8 of 9 items; 1 counted as failed")
    );
}

#[test]
fn rust_entry_over_files_gets_the_paths() {
    let ws = Workspace::new();
    let data = crate::parallel_run::support::docs(ws.path(), 3);
    struct Names;
    impl EntryScript for Names {
        fn run(&mut self, mini_batch: &MiniBatch) -> Result<Vec<String>, EntryError> {
            let MiniBatchData::Files(files) = &mini_batch.data else {
                return Err("expected files".into());
            };
            files
                .iter()
                .map(|f| Ok(std::fs::read_to_string(f)?.trim().to_string()))
                .collect()
        }
    }
    let cfg = ParallelRunConfig::builder()
        .rust_entry("names-v1", || Box::new(Names))
        .usual("2");
    let (run, _) = run_docs(&ws, cfg, data);
    ran(&run);
    assert_eq!(output(&run), "doc 1\ndoc 2\ndoc 3\n");
}
