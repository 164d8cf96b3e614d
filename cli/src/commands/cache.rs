//! `cache` (list, verify, gc, usage).

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn cmd_cache(store: &Store, action: CacheAction) -> Result<i32> {
    match action {
        CacheAction::Ls => cache_ls(store)?,
        CacheAction::Gc(args) => {
            let r = store.gc(&GcOptions {
                keep_last: args.keep_last,
                older_than: args.older_than,
                max_size: args.max_size,
                dry_run: args.dry_run,
            })?;
            print_gc_report(&r, args.max_size)?;
        }
        CacheAction::Verify => cache_verify(store)?,
        CacheAction::Rm { target } => {
            let entries = store.cache_entries()?;
            let chosen: Vec<_> = entries
                .iter()
                .filter(|e| e.step == target || (target.len() >= 6 && e.key.starts_with(&target)))
                .collect();
            if chosen.is_empty() {
                bail!("no cache entry for step or key {target:?} (see `stepgraph cache ls`)");
            }
            for e in &chosen {
                store.cache_remove(&e.key)?;
            }
            outln!("removed {} cache entries", chosen.len())?;
        }
    }
    Ok(exit::OK)
}

/// `cache ls`: the entries with their sizes, and the store's disk usage.
fn cache_ls(store: &Store) -> Result<()> {
    let usage = store.usage()?;
    let mut entries: Vec<_> = store
        .cache_entries()?
        .into_iter()
        .zip(usage.entries)
        .collect();
    entries.sort_by(|(a, _), (b, _)| {
        (&a.pipeline, &a.step, a.created_unix_ms).cmp(&(&b.pipeline, &b.step, b.created_unix_ms))
    });
    if entries.is_empty() {
        outln!("the cache is empty")?;
    } else {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|(e, u)| {
                vec![
                    e.key.get(..12).unwrap_or(&e.key).to_string(),
                    e.pipeline.clone(),
                    e.step.clone(),
                    e.run_id.clone(),
                    format!("{} files, {}", u.files, render::bytes(u.size)),
                    render::bytes(u.disk),
                    render::bytes(u.exclusive),
                    render::time(e.created_unix_ms),
                ]
            })
            .collect();
        out!(
            "{}",
            render::table(
                &[
                    "key",
                    "pipeline",
                    "step",
                    "run",
                    "outputs",
                    "disk",
                    "exclusive",
                    "created"
                ],
                &rows
            )
        )?;
    }
    outln!(
        "\nstore {}: {} on disk (each file counted once): objects {}, runs/ {} more \
         (work copies, logs, outputs not in objects/), db {}",
        store.root().display(),
        render::bytes(usage.total),
        render::bytes(usage.objects),
        render::bytes(usage.runs),
        render::bytes(usage.db)
    )?;
    outln!("(disk: the entry's objects; exclusive: the objects no other entry shares)")?;
    Ok(())
}

/// `cache verify`: rehash every entry's objects; print what was dropped.
fn cache_verify(store: &Store) -> Result<()> {
    let report = store.verify_cache()?;
    for d in &report.dropped {
        outln!(
            "dropped {} (step {}): {}",
            d.key.get(..12).unwrap_or(&d.key),
            d.step,
            d.problems.join("; ")
        )?;
    }
    outln!(
        "verified {} entries: {} dropped",
        report.checked,
        report.dropped.len()
    )?;
    Ok(())
}

pub(super) fn print_gc_report(r: &GcReport, max_size: Option<u64>) -> Result<()> {
    let (verb, freed) = if r.dry_run {
        ("would remove", "would free")
    } else {
        ("removed", "freed")
    };
    for e in &r.entries {
        outln!(
            "{verb} entry {} ({} / {}, run {}, computed in {}, {})",
            e.key.get(..12).unwrap_or(&e.key),
            e.pipeline,
            e.step,
            e.run_id,
            render::duration(e.duration_ms),
            render::bytes(e.bytes)
        )?;
    }
    outln!(
        "{verb} {} cache entries (kept {}), {} unreferenced objects (kept {}), {} progress files; \
         {freed} {} on disk",
        r.entries.len(),
        r.entries_kept,
        r.objects,
        r.kept,
        r.progress,
        render::bytes(r.bytes)
    )?;
    if r.envs > 0 {
        outln!("{verb} {} environments no entry uses (envs/)", r.envs)?;
    }
    if r.units > 0 || r.units_kept > 0 {
        outln!(
            "{verb} {} memoised mini-batches of incremental steps (kept {})",
            r.units,
            r.units_kept
        )?;
    }
    if r.aside_dbs > 0 || r.orphan_runs > 0 {
        outln!(
            "{verb} {} damaged databases moved aside earlier and {} run folders without a record",
            r.aside_dbs,
            r.orphan_runs
        )?;
    }
    if !r.foreign.is_empty() {
        let shown: Vec<String> = r
            .foreign
            .iter()
            .take(5)
            .map(|p| p.display().to_string())
            .collect();
        outln!(
            "left alone {} files the store did not write: {}{}",
            r.foreign.len(),
            shown.join(", "),
            if r.foreign.len() > 5 { ", ..." } else { "" }
        )?;
    }
    if r.still_linked > 0 {
        outln!(
            "{} of those objects ({}) are still linked from runs/ folders: their space is freed \
             once those runs go (`stepgraph runs prune --keep N`, `stepgraph runs rm ID`)",
            r.still_linked,
            render::bytes(r.still_linked_bytes)
        )?;
    }
    if let Some(max) = max_size {
        outln!(
            "store disk usage: {} before, about {} after (--max-size {})",
            render::bytes(r.size_before),
            render::bytes(r.size_before.saturating_sub(r.bytes)),
            render::bytes(max)
        )?;
    }
    if let (Some(max), true) = (max_size, r.over_max_size) {
        outln!(
            "the store is still over {}: what the latest runs (and --keep-last) use is kept; \
             remove old runs (`stepgraph runs prune`) or lower --keep-last",
            render::bytes(max)
        )?;
    }
    Ok(())
}
