#!/usr/bin/env python3
"""Deterministic test files for the incremental ParallelRunStep benchmark (issue 11).

  make_files.py create DIR N [--size 1024]
      Creates DIR/f000000.bin .. f{N-1}.bin, SIZE bytes each (default 1 KiB, like
      bench/python_vs_parallel.sh), content = a keyed BLAKE2b stream of the file's
      name, so the same N always gives byte-identical files. DIR must not exist or be empty.

  make_files.py mutate DIR --add-pct 1 --modify-pct 0.5 [--delete-pct 0] [--round 1] [--keep-mtime]
      Deterministically (depends only on the current sorted file list and --round):
      - adds round(N * add_pct / 100) new files, spread evenly through the sorted order
        (name = <existing name stem>_r<round>.bin, so each new file sorts right after an
        existing one: insertions in the middle, not only appends);
      - modifies round(N * modify_pct / 100) existing original files, evenly spaced, by
        rewriting their content (same size, new bytes keyed by round).
        By default the mtime changes as with any normal write; with --keep-mtime the
        old atime/mtime are restored afterwards (as `rsync -t`, `cp -p`, `tar x`
        or a build cache can do) - content changes, path/size/mtime do not;
      - deletes round(N * delete_pct / 100) other original files (default none).
      Prints a JSON summary with the lists' sizes and the names touched.
"""
import argparse
import hashlib
import json
import os
import sys


def content(key: str, size: int) -> bytes:
    out = bytearray()
    ctr = 0
    while len(out) < size:
        out += hashlib.blake2b(f"{key}/{ctr}".encode(), digest_size=64).digest()
        ctr += 1
    return bytes(out[:size])


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def create(d: str, n: int, size: int) -> dict:
    os.makedirs(d, exist_ok=True)
    if os.listdir(d):
        sys.exit(f"{d} is not empty")
    width = max(6, len(str(n - 1)))
    for i in range(n):
        name = f"f{i:0{width}d}.bin"
        write(os.path.join(d, name), content(name, size))
    return {"created": n, "dir": d, "size": size}


def spread(k: int, n: int) -> list:
    """k indices in [0, n), evenly spaced, deterministic."""
    if k <= 0 or n <= 0:
        return []
    k = min(k, n)
    return sorted({(i * n) // k + (n // k) // 2 for i in range(k)})


def mutate(d: str, add_pct: float, modify_pct: float, rnd: int, keep_mtime: bool,
           delete_pct: float = 0.0) -> dict:
    names = sorted(x for x in os.listdir(d) if x.endswith(".bin"))
    n = len(names)
    originals = [x for x in names if "_r" not in x]
    n_add = round(n * add_pct / 100)
    n_mod = round(n * modify_pct / 100)
    # new files: after evenly spaced existing names
    added = []
    for i in spread(n_add, n):
        stem = names[i][: -len(".bin")]
        name = f"{stem}_r{rnd}.bin"
        p = os.path.join(d, name)
        if os.path.exists(p):
            sys.exit(f"{name} already exists: use another --round")
        size = os.path.getsize(os.path.join(d, names[i]))
        write(p, content(name, size))
        added.append(name)
    # modified files: evenly spaced originals, offset so they differ from the add spots
    modified = []
    idx = spread(n_mod, len(originals))
    idx = [(i + rnd) % len(originals) for i in idx]
    for i in sorted(set(idx)):
        name = originals[i]
        p = os.path.join(d, name)
        st = os.stat(p)
        write(p, content(f"{name}/mod{rnd}", st.st_size))
        if keep_mtime:
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        modified.append(name)
    # deleted files: evenly spaced originals, never one just modified
    deleted = []
    n_del = round(n * delete_pct / 100)
    for i in spread(n_del, len(originals)):
        j = (i + rnd + 2) % len(originals)
        name = originals[j]
        if name in modified:
            continue
        os.remove(os.path.join(d, name))
        deleted.append(name)
    return {"before": n, "after": n + len(added) - len(deleted), "added": len(added),
            "modified": len(modified), "deleted": len(deleted), "keep_mtime": keep_mtime,
            "added_names": added, "modified_names": modified, "deleted_names": deleted}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("dir")
    c.add_argument("n", type=int)
    c.add_argument("--size", type=int, default=1024)
    m = sub.add_parser("mutate")
    m.add_argument("dir")
    m.add_argument("--add-pct", type=float, default=1.0)
    m.add_argument("--modify-pct", type=float, default=0.5)
    m.add_argument("--delete-pct", type=float, default=0.0)
    m.add_argument("--round", type=int, default=1)
    m.add_argument("--keep-mtime", action="store_true")
    m.add_argument("--names", action="store_true", help="include the touched names in the JSON")
    a = ap.parse_args()
    if a.cmd == "create":
        r = create(a.dir, a.n, a.size)
    else:
        r = mutate(a.dir, a.add_pct, a.modify_pct, a.round, a.keep_mtime, a.delete_pct)
        if not a.names:
            for k in ("added_names", "modified_names", "deleted_names"):
                r.pop(k)
    print(json.dumps(r))


if __name__ == "__main__":
    main()
