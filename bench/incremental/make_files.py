"""Deterministic files for the incremental benchmarks.

    make_files.py create DIR N            N files DIR/day1/f000000.txt ... (about 100 bytes)
    make_files.py edit DIR N ADD_PCT MOD_PCT [spread|recent]
                                          add ADD_PCT% new files (DIR/day2/...) and modify
                                          MOD_PCT% of the first N: spread evenly over them
                                          (default, the worst case: each edit in its own
                                          mini-batch) or the most recent ones (the last)
"""
import os
import sys


def text(i, version):
    return ("file %d version %d " % (i, version)) * 4 + "\n"


def main():
    mode, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "create":
        os.makedirs(os.path.join(root, "day1"), exist_ok=True)
        for i in range(n):
            with open(os.path.join(root, "day1", "f%06d.txt" % i), "w") as f:
                f.write(text(i, 1))
    elif mode == "edit":
        add, mod = float(sys.argv[4]), float(sys.argv[5])
        os.makedirs(os.path.join(root, "day2"), exist_ok=True)
        for i in range(int(n * add / 100)):
            with open(os.path.join(root, "day2", "g%06d.txt" % i), "w") as f:
                f.write(text(i, 1))
        count = int(n * mod / 100)
        step = max(1, n // max(1, count))
        recent = len(sys.argv) > 6 and sys.argv[6] == "recent"
        for k in range(count):
            i = n - 1 - k if recent else (k * step + 7) % n
            with open(os.path.join(root, "day1", "f%06d.txt" % i), "w") as f:
                f.write(text(i, 2))
    else:
        sys.exit("usage: make_files.py create|edit DIR N [ADD_PCT MOD_PCT]")


if __name__ == "__main__":
    main()
