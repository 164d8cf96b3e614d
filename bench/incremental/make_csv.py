"""Deterministic CSV for the incremental benchmark.

    make_csv.py create PATH SIZE_MB    a CSV `id,shop,amount,text` of about SIZE_MB MB
    make_csv.py append PATH PCT        append PCT% more rows (ids continue)
"""
import random
import sys


def row(i):
    # ~530 bytes: ids, a shop, an amount and 500 characters of text that differ row to row
    # (as real text does; a constant padding would give the rolling hash nothing to cut on).
    text = random.Random(i).randbytes(250).hex()
    return "%d,shop%d,%d.%02d,%s\n" % (i, i % 97, i % 1000, i % 100, text)


def count_rows(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f) - 1


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "create":
        target = int(sys.argv[3]) * 1000 * 1000
        with open(path, "w") as f:
            f.write("id,shop,amount,text\n")
            i, size = 0, 0
            while size < target:
                r = row(i)
                f.write(r)
                size += len(r)
                i += 1
    elif mode == "append":
        n = count_rows(path)
        extra = int(n * float(sys.argv[3]) / 100)
        with open(path, "a") as f:
            for i in range(n, n + extra):
                f.write(row(i))
    else:
        sys.exit("usage: make_csv.py create PATH SIZE_MB | append PATH PCT")


if __name__ == "__main__":
    main()
