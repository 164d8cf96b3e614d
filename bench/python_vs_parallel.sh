#!/usr/bin/env bash
# ParallelRunStep with a Python entry vs GNU parallel running the same script, same work.
#
#   2,000 small files (1 KiB of random bytes each);
#   init(): ~200 ms of CPU (a busy loop standing in for a model load; NOT a sleep);
#   per file: read it + ~1 ms of CPU. Iteration counts calibrated once per script run
#   (calib.json), so both sides do identical work.
#
#   stepgraph: examples/bench_python_entry.rs -- one ParallelRunStep, FileDataset of the
#              2,000 files, mini_batch_size "50", process_count_per_node 2, fresh store
#              per run (hyperfine --prepare removes it). Two long-lived Python workers:
#              init() runs twice in all.
#   peer:      ls FILES | parallel -j2 -N 50 --keep-order python3 score.py {}
#              40 Python processes of 50 files each: init() runs 40 times.
#
# Both write the same rows (checked with diff). Both timed as whole processes by hyperfine,
# in ROUNDS rounds of RUNS runs each (commands interleaved by round); reported: median.
#
# Usage (from the repo root): bash bench/python_vs_parallel.sh [RUNS] [ROUNDS]
# Goal (issue): stepgraph >= 3x faster.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
ROUNDS=${2:-2}
source bench/common.sh
command -v hyperfine >/dev/null || apt-get install -y hyperfine >/dev/null 2>&1 || cargo install hyperfine
command -v parallel >/dev/null || apt-get install -y parallel >/dev/null


bench_setup bench_python_entry py
mkdir -p "$DIR/src" "$DIR/data"
cp bench/py/score.py "$DIR/src/"
for i in $(seq -w 0 1999); do head -c 1K /dev/urandom > "$DIR/data/f$i.bin"; done

echo "python: $(command -v python3) ($(python3 --version 2>&1)); parallel: $(parallel --version | head -1)"
python3 - "$DIR/src/calib.json" <<'EOF'
import json, sys, time
def spin(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x
probe = 2_000_000
best = min((lambda t: (spin(probe), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
rate = probe / best
c = {"init_iters": int(rate * 0.200), "item_iters": int(rate * 0.001)}
json.dump(c, open(sys.argv[1], "w"))
t = time.perf_counter(); spin(c["init_iters"]); a = time.perf_counter() - t
t = time.perf_counter(); [spin(c["item_iters"]) for _ in range(100)]; b = (time.perf_counter() - t) / 100
print(f"calibrated: init {c['init_iters']} iterations = {a * 1000:.0f} ms, per file {c['item_iters']} iterations = {b * 1000:.2f} ms (single process)")
EOF

SG="$BIN --store $DIR/store --files $DIR/data --source-dir $DIR/src --entry score.py --mini-batch-size 50 --workers 2"
PAR="ls -1 $DIR/data/* | parallel --will-cite -j2 -N 50 --keep-order python3 $DIR/src/score.py {}"

echo "checking that both produce the same rows ..."
rm -rf "$DIR/store"
out=$($SG)
cp "$out" "$DIR/stepgraph_rows.txt"
bash -c "$PAR" > "$DIR/parallel_rows.txt"
diff "$DIR/stepgraph_rows.txt" "$DIR/parallel_rows.txt"
echo "identical: $(wc -l < "$DIR/parallel_rows.txt") rows"

for r in $(seq 1 "$ROUNDS"); do
  hyperfine --warmup 1 --runs "$RUNS" --export-json "$DIR/r$r.json" \
    --prepare "rm -rf $DIR/store" \
    -n stepgraph "$SG > /dev/null" \
    -n parallel "$PAR > /dev/null"
  echo "round $r done (load: $(cut -d' ' -f1-3 /proc/loadavg))"
done

python3 - "$DIR" "$ROUNDS" <<'EOF'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
t = {}
for r in range(1, rounds + 1):
    for res in json.load(open(f"{d}/r{r}.json"))["results"]:
        t.setdefault(res["command"], []).extend(res["times"])
s, p = statistics.median(t["stepgraph"]), statistics.median(t["parallel"])
print(f"\nstepgraph median {s:.3f} s (min {min(t['stepgraph']):.3f}, n={len(t['stepgraph'])})")
print(f"parallel  median {p:.3f} s (min {min(t['parallel']):.3f}, n={len(t['parallel'])})")
print(f"stepgraph is {p / s:.2f}x faster (goal >= 3x)")
EOF
