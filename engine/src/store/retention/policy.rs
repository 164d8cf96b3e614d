//! Which cache entries `gc` removes: the rules of [`GcOptions`], kept apart from the removal.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{object_hashes, GcOptions, GcReport, ObjStat};
use crate::store::records::{CacheEntry, RunRecord, RunStatus};
use crate::store::units::UnitRecord;

/// The keys of the steps of runs still going.
pub(super) fn running_keys(runs: &[RunRecord]) -> HashSet<String> {
    runs.iter()
        .filter(|r| r.status == RunStatus::Running)
        .flat_map(step_keys)
        .collect()
}

pub(super) fn step_keys(r: &RunRecord) -> Vec<String> {
    r.steps.iter().filter_map(|s| s.key.clone()).collect()
}

/// The entries gc may remove (rules 1 and 2 of [`GcOptions`]).
pub(super) fn candidates<'e>(
    entries: &'e [CacheEntry],
    runs: &[RunRecord],
    running: &HashSet<String>,
    opts: &GcOptions,
    now: u64,
) -> Vec<&'e CacheEntry> {
    let mut kept: HashSet<String> = running.clone();
    let mut pipelines = HashSet::new();
    let mut newest: BTreeMap<(&str, &str), &CacheEntry> = BTreeMap::new();
    for e in entries {
        let slot = newest.entry((&e.pipeline, &e.step)).or_insert(e);
        if (e.created_unix_ms, &e.key) > (slot.created_unix_ms, &slot.key) {
            *slot = e;
        }
    }
    let cached: HashSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    for r in runs {
        // Newest first: the first run seen of each pipeline is its latest.
        if pipelines.insert(r.pipeline.as_str()) {
            kept.extend(step_keys(r));
            // A step of that run that left no entry (it failed, or the run was killed):
            // its latest output is still the one a rerun builds on.
            for s in &r.steps {
                if s.key.as_deref().is_some_and(|k| cached.contains(k)) {
                    continue;
                }
                if let Some(e) = newest.get(&(r.pipeline.as_str(), s.name.as_str())) {
                    kept.insert(e.key.clone());
                }
            }
        }
    }
    if let Some(n) = opts.keep_last {
        let mut by_step: BTreeMap<(&str, &str), Vec<&CacheEntry>> = BTreeMap::new();
        for e in entries {
            by_step.entry((&e.pipeline, &e.step)).or_default().push(e);
        }
        for list in by_step.values_mut() {
            list.sort_by(|a, b| (b.created_unix_ms, &b.key).cmp(&(a.created_unix_ms, &a.key)));
            kept.extend(list.iter().take(n).map(|e| e.key.clone()));
        }
    }
    let old_enough = |e: &CacheEntry| {
        opts.older_than.is_none_or(|d| {
            now.saturating_sub(e.created_unix_ms) > u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        })
    };
    entries
        .iter()
        .filter(|e| !kept.contains(&e.key) && old_enough(e))
        .collect()
}

/// The candidates to remove, with the bytes each frees alone (rule 3 of [`GcOptions`]); sets
/// `report.over_max_size`.
pub(super) fn choose<'e>(
    entries: &'e [CacheEntry],
    candidates: Vec<&'e CacheEntry>,
    stats: &HashMap<String, ObjStat>,
    memo: &HashSet<String>,
    max_size: Option<u64>,
    report: &mut GcReport,
) -> Vec<(&'e CacheEntry, u64)> {
    let frees = |h: &str| {
        stats
            .get(h)
            .filter(|s| s.links == 1)
            .map(|s| s.disk)
            .unwrap_or(0)
    };
    let mut refs: HashMap<&str, u64> = HashMap::new();
    for e in entries {
        for h in object_hashes(e) {
            *refs.entry(h).or_default() += 1;
        }
    }
    let exclusive = |e: &CacheEntry, refs: &HashMap<&str, u64>| -> u64 {
        object_hashes(e)
            .into_iter()
            .filter(|h| refs.get(h) == Some(&1))
            .map(frees)
            .sum()
    };
    let with_bytes = candidates.into_iter().map(|e| (e, exclusive(e, &refs)));
    let Some(max) = max_size else {
        return with_bytes.collect();
    };
    // Objects no entry names go, except those of memoised mini-batches (counted as kept:
    // most of them stay with their entries or as progress).
    let garbage: u64 = stats
        .keys()
        .filter(|h| !refs.contains_key(h.as_str()) && !memo.contains(h.as_str()))
        .map(|h| frees(h))
        .sum();
    let mut projected = report.size_before.saturating_sub(garbage);
    // Cheapest to recompute per byte freed first; entries that free nothing (objects shared
    // or linked from runs/) last.
    let mut order: Vec<(&CacheEntry, u64)> = with_bytes.collect();
    order.sort_by(|(a, ab), (b, bb)| {
        let cost =
            |e: &CacheEntry, bytes: u64| (bytes == 0, e.duration_ms as f64 / bytes.max(1) as f64);
        cost(a, *ab)
            .partial_cmp(&cost(b, *bb))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.key.cmp(&b.key))
    });
    let mut chosen = Vec::new();
    for (e, bytes) in order {
        if projected <= max {
            break;
        }
        for h in object_hashes(e) {
            if let Some(n) = refs.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    projected = projected.saturating_sub(frees(h));
                }
            }
        }
        chosen.push((e, bytes));
    }
    report.over_max_size = projected > max;
    chosen
}

/// The unit memo records gc removes, treated like step entries: a unit is kept while a
/// remaining entry names it (the output it was gathered from); a unit of a step of its
/// pipeline's latest run that is newer than every entry of that step is progress of that run
/// (it failed or was killed: a rerun resumes from it), kept too. The others go (a step
/// renamed, removed, or whose entry `cache rm` removed), unless `older_than` keeps them.
pub(super) fn unit_candidates<'u>(
    units: &'u [UnitRecord],
    entries: &[CacheEntry],
    runs: &[RunRecord],
    named: &HashSet<String>,
    older_than: Option<std::time::Duration>,
    now: u64,
) -> Vec<&'u UnitRecord> {
    let mut newest: HashMap<(&str, &str), u64> = HashMap::new();
    for e in entries {
        let t = newest.entry((&e.pipeline, &e.step)).or_default();
        *t = (*t).max(e.created_unix_ms);
    }
    let mut latest_steps: HashSet<(&str, &str)> = HashSet::new();
    let mut pipelines = HashSet::new();
    for r in runs {
        if pipelines.insert(r.pipeline.as_str()) {
            latest_steps.extend(
                r.steps
                    .iter()
                    .map(|s| (r.pipeline.as_str(), s.name.as_str())),
            );
        }
    }
    let old_enough = |u: &UnitRecord| {
        older_than.is_none_or(|d| {
            now.saturating_sub(u.created_unix_ms) > u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        })
    };
    let progress = |u: &UnitRecord| {
        let step = (u.pipeline.as_str(), u.step.as_str());
        latest_steps.contains(&step) && newest.get(&step).is_none_or(|t| u.created_unix_ms > *t)
    };
    units
        .iter()
        .filter(|u| !named.contains(u.key.as_str()))
        .filter(|u| !progress(u))
        .filter(|u| old_enough(u))
        .collect()
}
