#!/usr/bin/env python3
"""Time several commands run by run, interleaved (A B C A B C ..., order rotated each
round), so that bursts of load from other work on a shared machine hit every command alike.

    interleave.py [--runs N] [--warmup W] [--prepare CMD] --json OUT NAME CMD [NAME CMD ...]

Commands are split with shlex and run without a shell, stdout to /dev/null, stderr kept.
--prepare runs (untimed, through sh) before every timed run. Each run's wall time is taken
with time.perf_counter() around subprocess.run (includes process start-up, as hyperfine -N
does). Prints median / min per command; writes {"NAME": [seconds, ...]} to OUT.
"""
import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prepare", default=None)
    ap.add_argument("--json", required=True)
    ap.add_argument("pairs", nargs="+")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        sys.exit("expected NAME CMD pairs")
    cmds = [(a.pairs[i], shlex.split(a.pairs[i + 1])) for i in range(0, len(a.pairs), 2)]

    def once(argv):
        if a.prepare:
            subprocess.run(a.prepare, shell=True, check=True)
        t = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t

    for _ in range(a.warmup):
        for _, argv in cmds:
            once(argv)
    times = {name: [] for name, _ in cmds}
    for r in range(a.runs):
        k = r % len(cmds)
        for name, argv in cmds[k:] + cmds[:k]:
            times[name].append(once(argv))
    for name, ts in times.items():
        print(f"  {name:20s} median {statistics.median(ts) * 1000:8.1f} ms  "
              f"min {min(ts) * 1000:8.1f} ms  (n={len(ts)})")
    with open(a.json, "w") as f:
        json.dump(times, f)


if __name__ == "__main__":
    main()
