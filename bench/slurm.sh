#!/usr/bin/env bash
# ParallelRunStep on the local Slurm cluster (2 nodes x 1 process) vs locally (2 processes),
# same P2 workload as bench/python_vs_parallel.sh:
#
#   2,000 files of 1 KiB; bench/py/score.py: init() ~200 ms of CPU, ~1 ms of CPU per file
#   (calibrated once per script run, calib.json); mini_batch_size "50" (40 mini-batches).
#
#   local: `stepgraph run local.json`  (process_count_per_node 2, node_count 1)
#   slurm: `stepgraph run slurm.json`  (compute "hpc": partition debug; node_count 2,
#          process_count_per_node 1): one sbatch job, an agent per node (srun), each with one
#          worker; the coordinator in `stepgraph run` relays mini-batches over TCP.
#
# Each run uses a fresh store and starts when both nodes are idle. RUNS pairs, interleaved
# (local, slurm, local, slurm, ...).
# Reported (medians over the runs):
#   - wall time of the whole `stepgraph run` for each side, and the overhead slurm - local;
#   - sbatch's own time (`submitting the agents' job` to `submitted Slurm job`);
#   - job start latency: `submitted Slurm job` to the first / last agent ready
#     (logs/sys/agents.txt, Unix ms), i.e. sbatch + scheduling + srun + agent start +
#     handshake + path checks;
#   - per-mini-batch round trip: the coordinator's time for a try (logs/sys/node/<slot>/,
#     from handing it to the remote worker to its result) minus the agent's time for the same
#     try (logs/sys/node/<node>/agent.txt: the worker's run alone): framing, TCP and the
#     relay threads on both sides.
#
# Needs the cluster (.ci/slurm-up.sh, as root). Usage (from the repo root):
#   bash bench/slurm.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/target-bench}
sinfo -h -o %P | grep -q '^debug' || { echo "no Slurm partition debug: run .ci/slurm-up.sh" >&2; exit 1; }
cargo build --release -p stepgraph-cli >/dev/null 2>&1 || cargo build --release -p stepgraph-cli
BIN=$CARGO_TARGET_DIR/release/stepgraph
DIR=$(mktemp -d "/tmp/sg-slurm-XXXXXX")
trap 'rm -rf "$DIR"' EXIT

mkdir -p "$DIR/src" "$DIR/data"
cp bench/py/score.py "$DIR/src/"
for i in $(seq -w 0 1999); do head -c 1K /dev/urandom > "$DIR/data/f$i.bin"; done
python3 - "$DIR/src/calib.json" <<'PY'
import json, sys, time
def spin(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x
probe = 2_000_000
best = min((lambda t: (spin(probe), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
rate = probe / best
json.dump({"init_iters": int(rate * 0.200), "item_iters": int(rate * 0.001)}, open(sys.argv[1], "w"))
PY

spec() { # NAME NODES PROCS COMPUTE_FIELD
  cat > "$DIR/$1.json" <<JSON
{"name": "p2-$1",
 "compute": {"hpc": {"type": "slurm", "partition": "debug", "time": "00:30:00"}},
 "datasets": {"files": {"type": "file", "path": "data", "pattern": "*.bin"}},
 "steps": [{"name": "score", "type": "parallel_run", "inputs": ["files"], "output": "rows"$4,
   "parallel_run_config": {"source_directory": "src", "entry_script": "score.py",
     "mini_batch_size": "50", "error_threshold": 0, "output_action": "append_row",
     "process_count_per_node": $3, "node_count": $2}}]}
JSON
}
spec local 1 2 ""
spec slurm 2 1 ', "compute": "hpc"'

now() { date +%s.%N; }
for r in $(seq 1 "$RUNS"); do
  for side in local slurm; do
    store="$DIR/store-$side-$r"
    # Each Slurm run starts on an idle cluster (the previous job's nodes released): the job
    # start latency measured is the scheduler's on idle nodes, not the wait for a job ending.
    for _ in $(seq 1 300); do
      [ -z "$(sinfo -h -N -p debug -o %T | grep -v '^idle$')" ] && break
      sleep 0.1
    done
    t0=$(now)
    (cd "$DIR" && "$BIN" --store "$store" run "$side.json" >/dev/null 2>"$DIR/$side-$r.err")
    t1=$(now)
    echo "$side $r $(echo "$t1 - $t0" | bc)" >> "$DIR/times.txt"
  done
  echo "pair $r done (load: $(cut -d' ' -f1-3 /proc/loadavg))"
done

python3 - "$DIR" "$RUNS" <<'PY'
import glob, os, re, statistics, sys
d, runs = sys.argv[1], int(sys.argv[2])
times = {"local": [], "slurm": []}
for line in open(f"{d}/times.txt"):
    side, _, t = line.split()
    times[side].append(float(t))
def rows(side, r):
    [f] = glob.glob(f"{d}/store-{side}-{r}/runs/*/score/outputs/rows/*")
    return open(f, "rb").read()
for r in range(1, runs + 1):
    assert rows("local", r) == rows("slurm", r), f"run {r}: outputs differ"
n_rows = rows("local", 1).count(b"\n")
print(f"identical outputs: {n_rows} rows, every run")
first, last, rtt, coord, agent, sbatch = [], [], [], [], [], []
for r in range(1, runs + 1):
    [step] = glob.glob(f"{d}/store-slurm-{r}/runs/*/score")
    log = open(f"{step}/logs/sys/agents.txt").read().splitlines()
    sub = next(int(l.split()[0]) for l in log if "submitted Slurm job" in l)
    sbatch.append(sub - next(int(l.split()[0]) for l in log if "submitting the agents' job" in l))
    ready = [int(l.split()[0]) for l in log if re.search(r"node \S+: worker-\S+ ready", l)]
    first.append(min(ready) - sub); last.append(max(ready) - sub)
    # slot -> node, from "agent pid P on node N (...) authenticated: node slot S"
    slots = {m.group(2): m.group(1) for m in (re.search(r"on node (\S+) .*node slot (\d+)", l) for l in log) if m}
    for slot, node in slots.items():
        c, first_try = {}, None
        for l in open(f"{step}/logs/sys/node/{slot}/process000.txt"):
            m = re.match(r"mini-batch (\d+): done: .* in ([\d.]+) s", l)
            if not m: continue
            if first_try is None:
                # The slot's first try also waited for its agent (the job start): left out.
                first_try = int(m.group(1)); continue
            c[int(m.group(1))] = float(m.group(2))
        for l in open(f"{step}/logs/sys/node/{node}/agent.txt"):
            m = re.search(r"mini-batch (\d+) on process \d+: done in ([\d.]+) s", l)
            if m and int(m.group(1)) in c:
                i = int(m.group(1)); a = float(m.group(2))
                rtt.append((c[i] - a) * 1000); coord.append(c[i]); agent.append(a)
med = statistics.median
l, s = med(times["local"]), med(times["slurm"])
print(f"local 1 node x 2 processes: median {l:.3f} s (min {min(times['local']):.3f}, n={len(times['local'])})")
print(f"slurm 2 nodes x 1 process:  median {s:.3f} s (min {min(times['slurm']):.3f}, n={len(times['slurm'])})")
print(f"overhead slurm - local: {s - l:+.3f} s ({(s / l - 1) * 100:+.1f}%)")
print(f"sbatch (submitting -> submitted): median {med(sbatch)} ms (min {min(sbatch)}, max {max(sbatch)})")
print(f"job start latency (submitted -> first agent ready): median {med(first)} ms (min {min(first)}, max {max(first)})")
print(f"job start latency (submitted -> last agent ready):  median {med(last)} ms (min {min(last)}, max {max(last)})")
print(f"per-mini-batch round trip (coordinator try - agent's worker time): median {med(rtt):.1f} ms, "
      f"p90 {sorted(rtt)[int(len(rtt) * 0.9)]:.1f} ms over {len(rtt)} mini-batches "
      f"(try {med(coord) * 1000:.1f} ms at the coordinator, {med(agent) * 1000:.1f} ms in the worker)")
PY
