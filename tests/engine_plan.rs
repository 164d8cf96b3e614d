//! Planning (`--dry-run`, `status`, `explain`) and the stability of keys and order.

use std::collections::BTreeMap;
use std::error::Error;

use serde_json::json;
use stepgraph_engine::{
    plan, run, CollectSink, Decision, FileDataset, Pipeline, PipelineData, PipelineParameter,
    PlanOptions, RunReason, Store,
};
use stepgraph_steps::{fn_step, FnStep};

use crate::common::{jobs, Counter, Workspace};

type TestResult = Result<(), Box<dyn Error>>;

/// `tagger` reads `docs/` and the parameter `tag`; `sizer` reads `docs/`; `joiner` reads both.
fn tagged(
    ws: &Workspace,
    executions: &Counter,
    order: &[usize],
) -> Result<Pipeline, Box<dyn Error>> {
    let docs = FileDataset::from_files("docs", ws.path().join("docs"));
    let (c1, c2, c3) = (executions.clone(), executions.clone(), executions.clone());
    let tagger = FnStep::new("tagger", "v1", move |ctx| {
        c1.hit();
        let tag = ctx.param("tag").cloned().unwrap_or_default();
        std::fs::write(ctx.output("out")?.join("tag.txt"), tag.to_string())?;
        Ok(())
    })
    .input("docs", docs.clone())
    .param(PipelineParameter::new("tag", "alpha"))
    .output("out", PipelineData::new("tagged"));
    let sizer = FnStep::new("sizer", "v1", move |ctx| {
        c2.hit();
        let n = ctx.input_files("docs")?.len();
        std::fs::write(ctx.output("out")?.join("n.txt"), n.to_string())?;
        Ok(())
    })
    .input("docs", docs)
    .output("out", PipelineData::new("sized"));
    let joiner = FnStep::new("joiner", "v1", move |ctx| {
        c3.hit();
        std::fs::write(ctx.output("out")?.join("j.txt"), "j")?;
        Ok(())
    })
    .input("t", PipelineData::new("tagged"))
    .input("s", PipelineData::new("sized"))
    .output("out", PipelineData::new("joined"));
    let mut steps = [Some(tagger), Some(sizer), Some(joiner)];
    let mut b = Pipeline::builder("tagged");
    for &i in order {
        if let Some(s) = steps[i].take() {
            b = b.step(s);
        }
    }
    Ok(b.build()?)
}

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write("docs/doc-01.txt", "one");
    ws.write("docs/doc-02.txt", "two");
    ws
}

fn decisions(
    store: &Store,
    p: &Pipeline,
    opts: &PlanOptions,
) -> Result<BTreeMap<String, Decision>, Box<dyn Error>> {
    Ok(plan(p, store, opts)?
        .steps
        .into_iter()
        .map(|s| (s.name, s.decision))
        .collect())
}

fn changes_text(d: &Decision) -> Result<Vec<String>, Box<dyn Error>> {
    match d {
        Decision::Run {
            reason: RunReason::Changed { changes },
            ..
        } => Ok(changes.iter().map(ToString::to_string).collect()),
        other => Err(format!("expected Run {{ Changed }}, got {other:?}").into()),
    }
}

#[test]
fn plan_before_any_run_says_never_run_for_roots_and_depends_on_upstream_below() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let n = Counter::new();
    let p = tagged(&ws, &n, &[0, 1, 2])?;
    let planned = plan(&p, &store, &PlanOptions::default())?;
    let names: Vec<&str> = planned.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["sizer", "tagger", "joiner"]);
    let d = decisions(&store, &p, &PlanOptions::default())?;
    for root in ["tagger", "sizer"] {
        assert!(
            matches!(
                &d[root],
                Decision::Run {
                    reason: RunReason::NeverRun,
                    ..
                }
            ),
            "{root}: {:?}",
            d[root]
        );
    }
    assert_eq!(
        d["joiner"],
        Decision::DependsOnUpstream {
            upstream: vec!["sizer".into(), "tagger".into()]
        }
    );
    assert_eq!(n.get(), 0, "planning executes nothing");
    assert!(store.runs()?.is_empty(), "planning records no run");
    Ok(())
}

#[test]
fn plan_after_a_run_reuses_every_step_with_the_run_keys() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let p = tagged(&ws, &Counter::new(), &[0, 1, 2])?;
    let s = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let d = decisions(&store, &p, &PlanOptions::default())?;
    for rec in &s.steps {
        match &d[&rec.name] {
            Decision::Reuse { key, from_run } => {
                assert_eq!(Some(key), rec.key.as_ref(), "{}", rec.name);
                assert_eq!(from_run, &s.run_id);
            }
            other => panic!("{}: expected Reuse, got {other:?}", rec.name),
        }
    }
    Ok(())
}

#[test]
fn plan_after_a_parameter_override_names_the_parameter_change() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let p = tagged(&ws, &Counter::new(), &[0, 1, 2])?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let opts = PlanOptions {
        params: BTreeMap::from([("tag".to_string(), json!("beta"))]),
        ..PlanOptions::default()
    };
    let d = decisions(&store, &p, &opts)?;
    assert_eq!(
        changes_text(&d["tagger"])?,
        [r#"params.tag: "alpha" -> "beta""#]
    );
    assert!(d["sizer"].is_up_to_date());
    assert_eq!(
        d["joiner"],
        Decision::DependsOnUpstream {
            upstream: vec!["tagger".into()]
        }
    );
    Ok(())
}

#[test]
fn plan_after_a_file_change_names_the_changed_and_added_files() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let p = tagged(&ws, &Counter::new(), &[0, 1, 2])?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    ws.write("docs/doc-02.txt", "TWO, edited");
    ws.write("docs/doc-03.txt", "three");
    let d = decisions(&store, &p, &PlanOptions::default())?;
    let expected = ["inputs.docs: changed doc-02.txt, added doc-03.txt"];
    assert_eq!(changes_text(&d["tagger"])?, expected);
    assert_eq!(changes_text(&d["sizer"])?, expected);
    Ok(())
}

#[test]
fn plan_says_forced_for_a_forced_step() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let p = tagged(&ws, &Counter::new(), &[0, 1, 2])?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let mut opts = PlanOptions::default();
    opts.force.insert("sizer".into());
    let d = decisions(&store, &p, &opts)?;
    assert!(
        matches!(
            &d["sizer"],
            Decision::Run {
                reason: RunReason::Forced,
                ..
            }
        ),
        "{:?}",
        d["sizer"]
    );
    assert!(d["tagger"].is_up_to_date());
    Ok(())
}

#[test]
fn plan_reports_a_damaged_cache_entry() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let p = tagged(&ws, &Counter::new(), &[0, 1, 2])?;
    run(&p, &store, &jobs(1), &CollectSink::default())?;
    let entry = store
        .cache_entries()?
        .into_iter()
        .find(|e| e.step == "sizer")
        .ok_or("no entry for sizer")?;
    let obj = &entry.outputs["out"].files["n.txt"];
    std::fs::remove_file(store.object_path(&obj.hash))?;
    let d = decisions(&store, &p, &PlanOptions::default())?;
    assert!(
        matches!(
            &d["sizer"],
            Decision::Run {
                reason: RunReason::CacheDamaged { .. },
                ..
            }
        ),
        "{:?}",
        d["sizer"]
    );
    Ok(())
}

#[test]
fn insertion_order_changes_neither_keys_nor_topological_order() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let first = tagged(&ws, &Counter::new(), &[0, 1, 2])?;
    let s = run(&first, &store, &jobs(1), &CollectSink::default())?;
    let ran: BTreeMap<String, Option<String>> = s
        .steps
        .iter()
        .map(|r| (r.name.clone(), r.key.clone()))
        .collect();
    for order in [[2, 1, 0], [1, 2, 0], [2, 0, 1]] {
        let other = tagged(&ws, &Counter::new(), &order)?;
        assert_eq!(
            other.step_names(),
            ["sizer", "tagger", "joiner"],
            "{order:?}"
        );
        assert_eq!(other.step_names(), first.step_names());
        let planned = plan(&other, &store, &PlanOptions::default())?;
        for step in planned.steps {
            match step.decision {
                Decision::Reuse { key, .. } => {
                    assert_eq!(
                        Some(&Some(key)),
                        ran.get(&step.name),
                        "{order:?} {}",
                        step.name
                    )
                }
                other => panic!("{order:?} {}: expected Reuse, got {other:?}", step.name),
            }
        }
    }
    Ok(())
}

#[test]
fn topological_order_breaks_ties_by_name() -> TestResult {
    let noop = |n: &str| FnStep::new(n, "v1", |_| Ok(()));
    let build = |names: &[&str]| {
        let mut b = Pipeline::builder("ties");
        for n in names {
            let mut s = noop(n);
            if *n == "bottom" {
                s = s.run_after("mid-b").run_after("mid-a");
            } else if n.starts_with("mid") {
                s = s.run_after("top");
            }
            b = b.step(s);
        }
        b.build()
    };
    let expected = ["alone", "top", "mid-a", "mid-b", "bottom"];
    for names in [
        ["bottom", "mid-b", "mid-a", "top", "alone"],
        ["alone", "top", "mid-a", "mid-b", "bottom"],
        ["mid-a", "alone", "bottom", "top", "mid-b"],
    ] {
        assert_eq!(build(&names)?.step_names(), expected, "{names:?}");
    }
    Ok(())
}

#[test]
fn a_closure_s_version_is_hashed_once_as_its_code() -> Result<(), Box<dyn std::error::Error>> {
    let ws = crate::common::Workspace::new();
    let store = ws.store();
    let step = stepgraph_steps::FnStep::new("hello", "v1", |_| Ok(()))
        .output("out", stepgraph_engine::PipelineData::new("out"));
    let p = stepgraph_engine::Pipeline::builder("v")
        .step(step)
        .build()?;
    let plan = stepgraph_engine::plan(&p, &store, &Default::default())?;
    let fp = plan.steps[0].fingerprint.clone().ok_or("no fingerprint")?;
    let names: Vec<&str> = fp.components.keys().map(String::as_str).collect();
    assert_eq!(names, ["code", "config", "kind"]);
    Ok(())
}

/// `fn_step!` identifies a step by its closure's text: editing the closure changes the key,
/// and `explain` (which prints these changes) names the `code` component and says it is the
/// closure. Reformatting the closure or editing its comments changes nothing.
#[test]
fn editing_an_fn_step_closure_reruns_it_and_explain_names_the_code() -> TestResult {
    let ws = workspace();
    let store = ws.store();
    let docs = FileDataset::from_files("docs", ws.path().join("docs"));
    let count = PipelineData::new("count");
    let first = fn_step!("counter", |ctx| {
        let n = ctx.input_files("docs")?.len();
        std::fs::write(ctx.output("count")?.join("n.txt"), n.to_string())?;
        Ok(())
    })
    .input("docs", &docs)
    .output("count", &count);
    let p = Pipeline::builder("closures").step(first).build()?;
    let ran = run(&p, &store, &jobs(1), &CollectSink::default())?;
    let key = ran.steps[0].key.clone().ok_or("no key")?;

    // The same closure, laid out differently and with a comment: still up to date.
    #[rustfmt::skip]
    let relaid = fn_step!("counter", |ctx| {
        // Count the documents.
        let n = ctx.input_files("docs")?.len();
        std::fs::write(ctx.output("count")?.join("n.txt"),
                       n.to_string())?;
        Ok(())
    })
    .input("docs", &docs)
    .output("count", &count);
    let p = Pipeline::builder("closures").step(relaid).build()?;
    assert!(decisions(&store, &p, &PlanOptions::default())?["counter"].is_up_to_date());

    // An edited closure: a new key, and explain names the code component.
    let edited = fn_step!("counter", |ctx| {
        let n = ctx.input_files("docs")?.len() * 2;
        std::fs::write(ctx.output("count")?.join("n.txt"), n.to_string())?;
        Ok(())
    })
    .input("docs", &docs)
    .output("count", &count);
    let p = Pipeline::builder("closures").step(edited).build()?;
    let planned = plan(&p, &store, &PlanOptions::default())?;
    let step = &planned.steps[0];
    let new_key = step.fingerprint.as_ref().ok_or("no fingerprint")?.key();
    assert_ne!(new_key.to_string(), key);
    let changes = changes_text(&step.decision)?;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].starts_with(r#"code.version: "fn_step! closure tokens blake3:"#),
        "{changes:?}"
    );
    Ok(())
}
