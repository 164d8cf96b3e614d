//! Properties: the scheduler runs every step of a random DAG exactly once and after all its
//! parents; building never panics, whatever the steps declare.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use stepgraph_engine::{
    run, BuildErrors, NullSink, Pipeline, PipelineData, RunStatus, StepError, StepStatus,
};
use stepgraph_steps::FnStep;

use crate::common::{jobs, Workspace};

/// A random DAG: node `i` has data parents (with repeats: several edges from one parent) and
/// `run_after` parents, all of lower index; `order` is the insertion order.
#[derive(Debug, Clone)]
struct Dag {
    data_parents: Vec<Vec<usize>>,
    after_parents: Vec<Vec<usize>>,
    order: Vec<usize>,
}

fn dag(max_nodes: usize) -> impl Strategy<Value = Dag> {
    (1..=max_nodes)
        .prop_flat_map(|n| {
            let parents = |i: usize, max: usize| {
                if i == 0 {
                    Just(Vec::new()).boxed()
                } else {
                    proptest::collection::vec(0..i, 0..=max).boxed()
                }
            };
            let data: Vec<_> = (0..n).map(|i| parents(i, 3)).collect();
            let after: Vec<_> = (0..n).map(|i| parents(i, 1)).collect();
            let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
            (data, after, order)
        })
        .prop_map(|(data_parents, after_parents, order)| Dag {
            data_parents,
            after_parents,
            order,
        })
}

fn name(i: usize) -> String {
    format!("s{i:03}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Start,
    End,
}

fn build(dag: &Dag, log: &Arc<Mutex<Vec<(usize, Mark)>>>) -> Result<Pipeline, BuildErrors> {
    let mut b = Pipeline::builder("random");
    for &i in &dag.order {
        let log = log.clone();
        let parents = dag.data_parents[i].clone();
        let mut step = FnStep::new(name(i), "v1", move |ctx| {
            log.lock()
                .map_err(|_| StepError::new("log poisoned"))?
                .push((i, Mark::Start));
            // Each input holds exactly its producer's file.
            for (k, p) in parents.iter().enumerate() {
                let got = std::fs::read_to_string(ctx.input(&format!("in{k}"))?.join("name.txt"))?;
                if got != name(*p) {
                    return Err(StepError::new(format!("input in{k}: {got:?}")));
                }
            }
            std::fs::write(ctx.output("out")?.join("name.txt"), name(i))?;
            log.lock()
                .map_err(|_| StepError::new("log poisoned"))?
                .push((i, Mark::End));
            Ok(())
        })
        .output("out", PipelineData::new(format!("d{i:03}")));
        for (k, p) in dag.data_parents[i].iter().enumerate() {
            step = step.input(format!("in{k}"), PipelineData::new(format!("d{p:03}")));
        }
        for p in &dag.after_parents[i] {
            step = step.run_after(name(*p));
        }
        b = b.step(step);
    }
    b.build()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_dag_runs_each_step_once_after_all_its_parents(dag in dag(200)) {
        let ws = Workspace::in_memory();
        let store = ws.store();
        let log = Arc::new(Mutex::new(Vec::new()));
        let pipeline = build(&dag, &log).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let summary = run(&pipeline, &store, &jobs(4), &NullSink)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let failed: Vec<_> = summary
            .steps
            .iter()
            .filter(|s| s.status != StepStatus::Ran)
            .map(|s| (s.name.clone(), s.status, s.error.clone()))
            .collect();
        prop_assert!(failed.is_empty(), "steps not run: {:?}", failed);
        prop_assert_eq!(summary.status, RunStatus::Succeeded);

        let log = log.lock().map_err(|_| TestCaseError::fail("log poisoned"))?.clone();
        let mut start: BTreeMap<usize, usize> = BTreeMap::new();
        let mut end: BTreeMap<usize, usize> = BTreeMap::new();
        for (pos, (i, mark)) in log.iter().enumerate() {
            let seen = match mark {
                Mark::Start => start.insert(*i, pos),
                Mark::End => end.insert(*i, pos),
            };
            prop_assert!(seen.is_none(), "{} {:?} twice", name(*i), mark);
        }
        let n = dag.order.len();
        prop_assert_eq!(start.len(), n);
        prop_assert_eq!(end.len(), n);
        for i in 0..n {
            let parents: BTreeSet<usize> = dag.data_parents[i]
                .iter()
                .chain(&dag.after_parents[i])
                .copied()
                .collect();
            for p in parents {
                prop_assert!(
                    end[&p] < start[&i],
                    "{} started before its parent {} finished",
                    name(i),
                    name(p)
                );
            }
        }
    }
}

/// Arbitrary declarations: names from a small pool of valid and invalid names, data read and
/// written from a small pool (so duplicates, missing producers and cycles all occur).
/// One step's declaration: name, data read, data written, run_after names.
type StepDecl = (String, Vec<String>, Vec<String>, Vec<String>);

fn arbitrary_steps() -> impl Strategy<Value = Vec<StepDecl>> {
    let names = prop_oneof![
        4 => proptest::sample::select(vec!["aaa", "bbb", "ccc", "ddd", "eee"]).prop_map(String::from),
        1 => ".{0,40}",
    ];
    let data = proptest::sample::select(vec!["d1", "d2", "d3", "d4"]).prop_map(String::from);
    let step = (
        names.clone(),
        proptest::collection::vec(data.clone(), 0..3),
        proptest::collection::vec(data, 0..3),
        proptest::collection::vec(names, 0..2),
    );
    proptest::collection::vec(step, 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn building_never_panics_and_errors_are_never_empty(steps in arbitrary_steps()) {
        let outcome = std::panic::catch_unwind(|| {
            let mut b = Pipeline::builder("arbitrary");
            for (name, reads, writes, after) in &steps {
                let mut s = FnStep::new(name.clone(), "v1", |_| Ok(()));
                for (k, d) in reads.iter().enumerate() {
                    s = s.input(format!("in{k}"), PipelineData::new(d.clone()));
                }
                for (k, d) in writes.iter().enumerate() {
                    s = s.output(format!("out{k}"), PipelineData::new(d.clone()));
                }
                for a in after {
                    s = s.run_after(a.clone());
                }
                b = b.step(s);
            }
            b.build().map(|p| p.step_names().len())
        });
        match outcome {
            Err(_) => prop_assert!(false, "build panicked on {:?}", steps),
            Ok(Err(BuildErrors(errors))) => prop_assert!(!errors.is_empty()),
            Ok(Ok(count)) => prop_assert!(count <= steps.len()),
        }
    }
}
