#!/usr/bin/env python3
"""DataChain delta processing on a folder of files: the peer for issue 11's benchmark.

Run it with the interpreter of a venv where `pip install datachain` was done, e.g.
  python3 -m venv /work/dc-venv && /work/dc-venv/bin/pip install datachain

The job (same in every phase):
    dc.read_storage("file:///DATA/", update=True, delta=True)   # delta keys: default
        .map(proc, output={"name": str, "nbytes": int, "digest": str, "phase": str})
        .save("bench_files")
  proc(file): reads the file, sleeps 1 ms, returns name, size, blake2b of the content
  and the phase that ran it (taken from an env var at call time, so it does not enter
  DataChain's chain hash). One row per file. Every call is also logged to
  WORK/udf_calls.log, so "rows processed" = UDF calls really made in that phase.
  update=True forces a fresh listing of the folder each run; without it DataChain
  reuses its cached listing for 4 hours (LISTING_TTL) and would see no change at all.

Subcommands
  run DATA WORK --phase NAME
      One process = one run of the job (a "daily job"). WORK is a private DataChain
      home (DATACHAIN_DIR=WORK/.datachain, config dirs under WORK, analytics off), so
      nothing touches ~/.datachain. Prints JSON: phase, chain_s (read_storage..save in
      process), udf_calls, dataset version, rows, plus a check of the saved dataset
      against the files now on disk (rows whose digest is stale, paths present more
      than once, files missing from the dataset, rows for files that no longer exist).
  bench DATA WORK [--add-pct 1] [--modify-pct 0.5] [--delta-on default|path]
                  [--parallel N] [--sleep-ms 1] [--correctness-round] [--verbose]
      DATA must hold the base files (make_files.py create). Runs, each in its own
      process, timed as a whole process (python start + import + job + exit; the
      correctness check's own time, check_s, is measured in-process and subtracted):
        full   first run, no dataset yet -> every file processed
        (make_files.py mutate: +add_pct% new files, modify_pct% rewritten)
        delta  rerun with delta
        noop   rerun with nothing changed (DataChain finds a job checkpoint: the
               previous job of the same script saved a dataset with the same chain hash)
        noop_no_checkpoint  same with DATACHAIN_IGNORE_CHECKPOINTS=1: delta finds
               no changed source rows and reuses the latest version
        [--correctness-round: make_files.py mutate --round 2 --keep-mtime
         --delete-pct 0.5 (+add_pct% new files, modify_pct% rewritten with their
         mtime restored, 0.5% deleted), then delta_round2]
      WORK must be fresh (no DataChain home yet), DATA fresh from `create`.
      Prints one JSON object: {"full_s", "delta_s", "noop_s", "version", ...}.
"""
import argparse
import functools
import hashlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DS_NAME = "bench_files"
# "default": DataChain's defaults, delta_on=("file.path", "file.etag", "file.version"),
#            i.e. a file is "new" when its (path, etag) pair is new; etag of a local file
#            is its mtime (client/local.py: etag=v["mtime"].hex()).
# "path":    delta_on="file.path" (delta_compare=None -> every other File field is
#            compared: size, etag(=mtime), last_modified, ...), as in the DataChain guide.
DELTA_ON = {"default": {}, "path": {"delta_on": "file.path"}}


def dc_env(work: str) -> dict:
    env = dict(os.environ)
    env.update({
        "DATACHAIN_DIR": os.path.join(work, ".datachain"),
        # Catalog() builds its cache/tmp dirs from DATACHAIN_ROOT_DIR (default: the
        # current directory), not from DATACHAIN_DIR, so pin it too.
        "DATACHAIN_ROOT_DIR": work,
        "DATACHAIN_GLOBAL_CONFIG_DIR": os.path.join(work, "global-config"),
        "DATACHAIN_SYSTEM_CONFIG_DIR": os.path.join(work, "system-config"),
        "DATACHAIN_NO_ANALYTICS": "1",
        "DO_NOT_TRACK": "1",
        "XDG_CONFIG_HOME": os.path.join(work, "xdg-config"),
        "XDG_CACHE_HOME": os.path.join(work, "xdg-cache"),
        "TMPDIR": os.path.join(work, "tmp"),
    })
    return env


def digest_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def cmd_run(data: str, work: str, phase: str, delta_on: str, ignore_ckpt: bool,
            update: bool = True, parallel: int = 0, sleep_ms: float = 1.0) -> dict:
    os.makedirs(work, exist_ok=True)
    env = dc_env(work)
    for k in ("DATACHAIN_DIR", "DATACHAIN_GLOBAL_CONFIG_DIR", "DATACHAIN_SYSTEM_CONFIG_DIR",
              "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "TMPDIR"):
        os.makedirs(env[k], exist_ok=True)
    os.environ.update(env)
    os.environ["DC_BENCH_PHASE"] = phase
    os.environ["DC_BENCH_SLEEP"] = str(sleep_ms / 1000.0)
    if ignore_ckpt:
        # skip DataChain's job checkpoints (a rerun of the same script reuses a saved
        # dataset whose chain hash is unchanged); the delta logic then decides alone
        os.environ["DATACHAIN_IGNORE_CHECKPOINTS"] = "1"
    os.environ["DC_BENCH_CALLS"] = os.path.join(work, "udf_calls.log")

    t_import = time.perf_counter()
    import datachain as dc
    from datachain import File
    from importlib.metadata import version
    import_s = time.perf_counter() - t_import

    def proc(file: File) -> tuple[str, int, str, str]:
        data = file.read()
        time.sleep(float(os.environ.get("DC_BENCH_SLEEP", "0.001")))  # 1 ms by default
        ph = os.environ.get("DC_BENCH_PHASE", "?")
        with open(os.environ["DC_BENCH_CALLS"], "a") as log:
            log.write(f"{ph}\t{file.path}\n")
        return (file.path.rsplit("/", 1)[-1], len(data),
                hashlib.blake2b(data, digest_size=16).hexdigest(), ph)

    def calls() -> int:
        try:
            with open(os.environ["DC_BENCH_CALLS"]) as f:
                return sum(1 for line in f if line.startswith(phase + "\t"))
        except FileNotFoundError:
            return 0

    before = calls()
    uri = "file://" + os.path.abspath(data).rstrip("/") + "/"
    t0 = time.perf_counter()
    src = dc.read_storage(uri, update=update, delta=True, **DELTA_ON[delta_on])
    if parallel:  # UDF in `parallel` worker processes (default: in this process)
        src = src.settings(parallel=parallel)
    chain = (
        src.map(proc, output={"name": str, "nbytes": int, "digest": str, "phase": str})
        .save(DS_NAME)
    )
    chain_s = time.perf_counter() - t0
    udf_calls = calls() - before

    # ---- check the saved dataset against the files on disk (timed apart: check_s is
    # subtracted from the process wall time by `bench`) ----
    t_check = time.perf_counter()
    ds = dc.read_dataset(DS_NAME)
    rows = ds.to_list("file.path", "digest", "phase")
    on_disk = {n: digest_of(os.path.join(data, n)) for n in os.listdir(data)}
    seen = {}
    stale = gone = 0
    by_phase = {}
    for path, dg, ph in rows:
        by_phase[ph] = by_phase.get(ph, 0) + 1
        seen[path] = seen.get(path, 0) + 1
        if path not in on_disk:
            gone += 1
        elif on_disk[path] != dg:
            stale += 1
    dup = sum(c - 1 for c in seen.values() if c > 1)
    missing = sum(1 for n in on_disk if n not in seen)
    ds_version = chain.version  # version of the dataset this run saved (or reused)
    check_s = time.perf_counter() - t_check
    return {
        "phase": phase,
        "delta_on": delta_on,
        "ignore_checkpoints": ignore_ckpt,
        "update": update,
        "parallel": parallel,
        "sleep_ms": sleep_ms,
        "datachain": version("datachain"),
        "chain_s": round(chain_s, 3),
        "check_s": round(check_s, 3),
        "import_s": round(import_s, 3),
        "udf_calls": udf_calls,
        "files_on_disk": len(on_disk),
        "dataset_version": ds_version,
        "dataset_rows": len(rows),
        "rows_by_phase": by_phase,
        "stale_rows": stale,
        "duplicate_rows": dup,
        "files_missing_from_dataset": missing,
        "rows_for_deleted_files": gone,
    }


def run_phase(data: str, work: str, phase: str, delta_on: str, ignore_ckpt=False,
              parallel: int = 0, sleep_ms: float = 1.0) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "run", data, work,
                        "--phase", phase, "--delta-on", delta_on, "--parallel", str(parallel),
                        "--sleep-ms", str(sleep_ms)]
                       + (["--ignore-checkpoints"] if ignore_ckpt else []),
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"phase {phase} failed ({p.returncode})")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["process_with_check_s"] = round(wall, 3)
    r["process_s"] = round(wall - r["check_s"], 3)  # python start + import + job + exit
    r["stderr_tail"] = [l for l in p.stderr.splitlines() if "Checkpoint" in l or "rror" in l][-5:]
    return r


def mutate(data: str, add_pct: float, modify_pct: float, rnd: int, keep_mtime: bool,
           delete_pct: float = 0.0) -> dict:
    args = [sys.executable, os.path.join(HERE, "make_files.py"), "mutate", data,
            "--add-pct", str(add_pct), "--modify-pct", str(modify_pct), "--round", str(rnd),
            "--delete-pct", str(delete_pct)]
    if keep_mtime:
        args.append("--keep-mtime")
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def cmd_bench(a) -> dict:
    if os.path.exists(os.path.join(a.work, ".datachain")):
        raise SystemExit(f"{a.work} already has a DataChain home: use a fresh WORK dir")
    phases = {}
    P = a.parallel
    run_phase = functools.partial(globals()["run_phase"], sleep_ms=a.sleep_ms)
    phases["full"] = run_phase(a.data, a.work, "full", a.delta_on, parallel=P)
    mut = mutate(a.data, a.add_pct, a.modify_pct, 1, False)
    phases["delta"] = run_phase(a.data, a.work, "delta", a.delta_on, parallel=P)
    phases["noop"] = run_phase(a.data, a.work, "noop", a.delta_on, parallel=P)
    phases["noop_no_checkpoint"] = run_phase(a.data, a.work, "noop_no_checkpoint",
                                             a.delta_on, ignore_ckpt=True, parallel=P)
    out = {
        "full_s": phases["full"]["process_s"],
        "delta_s": phases["delta"]["process_s"],
        "noop_s": phases["noop"]["process_s"],
        "version": phases["full"]["datachain"],
        "full_rows_processed": phases["full"]["udf_calls"],
        "delta_rows_processed": phases["delta"]["udf_calls"],
        "noop_rows_processed": phases["noop"]["udf_calls"],
        "noop_no_checkpoint_s": phases["noop_no_checkpoint"]["process_s"],
        "noop_no_checkpoint_rows_processed": phases["noop_no_checkpoint"]["udf_calls"],
        "mutation": mut,
    }
    if a.correctness_round:
        # round 2: add add_pct%, rewrite modify_pct% keeping their mtime, delete 0.5%
        out["mutation_round2"] = mutate(a.data, a.add_pct, a.modify_pct, 2, True, 0.5)
        phases["delta_round2"] = run_phase(a.data, a.work, "delta_round2", a.delta_on,
                                           parallel=P)
        out["delta_round2_s"] = phases["delta_round2"]["process_s"]
        out["delta_round2_rows_processed"] = phases["delta_round2"]["udf_calls"]
    out["delta_on"] = a.delta_on
    out["parallel"] = P
    out["sleep_ms"] = a.sleep_ms
    out["checks"] = {ph: {k: r[k] for k in ("dataset_version", "files_on_disk", "dataset_rows",
                                           "stale_rows", "duplicate_rows",
                                           "files_missing_from_dataset",
                                           "rows_for_deleted_files", "stderr_tail")}
                     for ph, r in phases.items()}
    out["phases"] = phases if a.verbose else {
        ph: {"process_s": r["process_s"], "chain_s": r["chain_s"], "import_s": r["import_s"],
             "udf_calls": r["udf_calls"]} for ph, r in phases.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("data")
    r.add_argument("work")
    r.add_argument("--phase", required=True)
    r.add_argument("--delta-on", choices=sorted(DELTA_ON), default="default")
    r.add_argument("--ignore-checkpoints", action="store_true")
    r.add_argument("--parallel", type=int, default=0)
    r.add_argument("--sleep-ms", type=float, default=1.0)
    r.add_argument("--no-update", action="store_true",
                   help="read_storage(update=False): reuse DataChain's cached listing "
                        "(up to 4 h old) - new/changed files are then not seen")
    b = sub.add_parser("bench")
    b.add_argument("data")
    b.add_argument("work")
    b.add_argument("--add-pct", type=float, default=1.0)
    b.add_argument("--modify-pct", type=float, default=0.5)
    b.add_argument("--delta-on", choices=sorted(DELTA_ON), default="default")
    b.add_argument("--correctness-round", action="store_true",
                   help="after noop: mutate round 2 (+add, content-only edits with mtime "
                        "kept, 0.5%% deleted) and run delta_round2")
    b.add_argument("--verbose", action="store_true")
    b.add_argument("--parallel", type=int, default=0,
                   help="DataChain .settings(parallel=N): UDF in N processes (0: in-process)")
    b.add_argument("--sleep-ms", type=float, default=1.0,
                   help="UDF sleep per file (1 ms as in issue 11; 0 shows DataChain's own cost)")
    a = ap.parse_args()
    if a.cmd == "run":
        print(json.dumps(cmd_run(a.data, a.work, a.phase, a.delta_on, a.ignore_checkpoints, not a.no_update,
                                 a.parallel, a.sleep_ms)))
    else:
        print(json.dumps(cmd_bench(a), indent=1))


if __name__ == "__main__":
    main()
