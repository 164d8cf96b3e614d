"""Entry script for bench/python_vs_parallel.sh, used two ways:

* by stepgraph's ParallelRunStep (imported: init() once per worker, run(mini_batch) per
  mini-batch of file paths);
* by GNU parallel as a plain script: `python3 score.py FILE...` does init() then the same
  work for each file given.

init() costs a fixed amount of CPU work (a busy loop, not a sleep: it stands in for loading
a model), calibrated to ~200 ms on this machine; each file costs ~1 ms of CPU plus reading
it. The iteration counts come from calib.json next to this file (written by the bench
script), so both sides do exactly the same work.
"""
import json
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "calib.json")) as _f:
    CALIB = json.load(_f)

MODEL = None


def spin(n):
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFFFFFF
    return x


def init():
    global MODEL
    MODEL = spin(CALIB["init_iters"])  # ~200 ms of CPU ("loading the model")


def work(path):
    with open(path, "rb") as f:
        data = f.read()
    score = spin(CALIB["item_iters"]) ^ MODEL ^ len(data)  # ~1 ms of CPU
    return "%s %d %d" % (os.path.basename(path), len(data), score)


def run(mini_batch):
    return [work(p) for p in mini_batch]


if __name__ == "__main__":
    init()
    out = [work(p) for p in sys.argv[1:]]
    sys.stdout.write("".join(line + "\n" for line in out))
