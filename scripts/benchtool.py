#!/usr/bin/env python3
"""Helpers for scripts/bench.sh.

    benchtool.py meta DIR FILES OUT.json     create, stat and unlink FILES 4 KiB files in DIR
    benchtool.py fio TEST FIO.json OUT.json  pull the number that matters out of fio's JSON
    benchtool.py report RESULTS_DIR [--json FILE] [--meta k=v ...]
                                             table of native vs volfs, optional JSON file

Results are files RESULTS_DIR/<target>/<test>.json, each {"value": float, "unit": str}.
"""

import json
import os
import sys
import time

TESTS = [
    ("seq-write", "1 MiB seq write"),
    ("seq-read-cold", "1 MiB seq read, cold"),
    ("seq-read-cached", "1 MiB seq read, cached"),
    ("rand-read-1", "4 KiB rand read, 1 job"),
    ("rand-read-4", "4 KiB rand read, 4 jobs"),
    ("rand-write-fsync", "4 KiB rand write, end_fsync"),
    ("meta-create", "create 4 KiB files"),
    ("meta-stat", "stat files"),
    ("meta-unlink", "unlink files"),
]
TARGETS = ("native", "volfs")


def save(path, value, unit):
    with open(path, "w") as f:
        json.dump({"value": value, "unit": unit}, f)


def meta(directory, files, out_prefix):
    files = int(files)
    data = b"\xa5" * 4096
    names = [os.path.join(directory, "f%06d" % i) for i in range(files)]
    os.makedirs(directory, exist_ok=True)

    start = time.perf_counter()
    for name in names:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
    create = time.perf_counter() - start

    start = time.perf_counter()
    for name in names:
        os.stat(name)
    stat = time.perf_counter() - start

    start = time.perf_counter()
    for name in names:
        os.unlink(name)
    unlink = time.perf_counter() - start

    for phase, secs in (("create", create), ("stat", stat), ("unlink", unlink)):
        save("%s/meta-%s.json" % (out_prefix, phase), files / secs, "files/s")
        print("  %-6s %6d files in %7.3f s  %10.0f files/s" % (phase, files, secs, files / secs))


def fio(test, fio_json, out):
    with open(fio_json) as f:
        text = f.read()
    # fio may print warnings before the JSON document.
    try:
        doc = json.loads(text[text.index("{"):])
    except ValueError:
        raise SystemExit("fio %s: no JSON result; fio said:\n%s" % (test, text[-2000:]))
    job = doc["jobs"][0]
    if job.get("error"):
        err = job["error"]
        save(out, None, "error: %s" % os.strerror(err))
        raise SystemExit("fio %s: I/O error %d (%s)" % (test, err, os.strerror(err)))
    if test.startswith("seq-"):
        side = job["write"] if "write" in test else job["read"]
        value, unit = side["bw_bytes"] / (1 << 20), "MiB/s"
    else:
        side = job["write"] if "write" in test else job["read"]
        value, unit = side["iops"], "IOPS"
    save(out, value, unit)
    print("  %s: %.1f %s" % (test, value, unit))


def report(results_dir, args):
    json_out = None
    extra = {}
    while args:
        a = args.pop(0)
        if a == "--json":
            json_out = args.pop(0)
        elif a == "--meta":
            k, _, v = args.pop(0).partition("=")
            extra[k] = v
    rows = []
    for test, label in TESTS:
        vals, errors, unit = {}, {}, ""
        for t in TARGETS:
            p = os.path.join(results_dir, t, test + ".json")
            if os.path.exists(p):
                with open(p) as f:
                    r = json.load(f)
                if r["value"] is None:
                    errors[t] = r["unit"]
                else:
                    vals[t], unit = r["value"], r["unit"]
        if not vals and not errors:
            continue
        ratio = vals["volfs"] / vals["native"] if len(vals) == 2 and vals["native"] else None
        row = {"test": test, "label": label, "unit": unit,
               "native": vals.get("native"), "volfs": vals.get("volfs"), "ratio": ratio}
        if errors:
            row["errors"] = errors
        rows.append(row)

    def num(row, target):
        v = row[target]
        if v is None:
            return "error" if target in row.get("errors", {}) else "-"
        return "%.0f" % v if v >= 100 else "%.1f" % v

    print("%-30s %-8s %12s %12s %7s" % ("test", "unit", "native", "volfs", "ratio"))
    print("-" * 73)
    for r in rows:
        ratio = "-" if r["ratio"] is None else "%.2fx" % r["ratio"]
        print("%-30s %-8s %12s %12s %7s" % (r["label"], r["unit"], num(r, "native"), num(r, "volfs"), ratio))
    for r in rows:
        for t, e in sorted(r.get("errors", {}).items()):
            print("%s on %s failed: %s" % (r["test"], t, e))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(dict(extra, results=rows), f, indent=2)
            f.write("\n")
        print("\nwrote %s" % json_out)


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "meta" and len(args) == 3:
        meta(*args)
    elif cmd == "fio" and len(args) == 3:
        fio(*args)
    elif cmd == "report":
        report(args[0], args[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
