#!/usr/bin/env python3
"""Helpers for scripts/bench.sh.

    benchtool.py meta DIR FILES OUT_DIR RUN  create, stat and unlink FILES 4 KiB files in DIR;
                                             with BENCH_VOLFS ("volfs --pool POOL") and
                                             BENCH_VOLUME set, also the FUSE requests the
                                             daemon served per file in each phase
    benchtool.py fio TEST FIO.json OUT.json  pull the number that matters out of fio's JSON
    benchtool.py report RESULTS_DIR [--json FILE] [--meta k=v ...] [--sides A,B]
                                             table of native vs volfs medians, optional JSON
                                             file with the medians and every run

Results are files RESULTS_DIR/<target>/<test>.<run>.json, each {"value": float, "unit": str}
(value null and unit "error: ..." for a failed run); <run> counts from 1.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time

TESTS = [
    ("seq-write", "1 MiB seq write + fsync"),
    ("seq-read-cold", "1 MiB seq read, cold"),
    ("seq-read-cached", "1 MiB seq read, cached"),
    ("rand-read-1", "4 KiB rand read, 1 job"),
    ("rand-read-4", "4 KiB rand read, 4 jobs"),
    ("rand-write-fsync", "4 KiB rand write, end_fsync"),
    ("meta-create", "create 4 KiB files"),
    ("meta-create-requests", "  FUSE requests per create"),
    ("meta-stat", "stat files"),
    ("meta-stat-requests", "  FUSE requests per stat"),
    ("meta-unlink", "unlink files"),
    ("meta-unlink-requests", "  FUSE requests per unlink"),
]
# The two sides a report compares, the baseline first (report --sides changes them).
SIDES = ("native", "volfs")


def save(path, value, unit):
    with open(path, "w") as f:
        json.dump({"value": value, "unit": unit}, f)


def served_requests():
    """{operation: requests} the volfs daemon has served on BENCH_VOLUME, from `volfs stats`;
    None when BENCH_VOLFS is not set (the native side)."""
    volfs, volume = os.environ.get("BENCH_VOLFS"), os.environ.get("BENCH_VOLUME")
    if not volfs or not volume:
        return None
    out = subprocess.run(volfs.split() + ["stats", "--json"], capture_output=True, check=True).stdout
    for v in json.loads(out)["volumes"]:
        if v["volume"] == volume and v.get("snapshot") is None:
            return {r["op"]: sum(r["latency"]["buckets"]) for r in v["requests"]}
    return {}


def meta(directory, files, out_dir, run):
    files = int(files)
    data = b"\xa5" * 4096
    names = [os.path.join(directory, "f%06d" % i) for i in range(files)]
    os.makedirs(directory, exist_ok=True)

    def create():
        for name in names:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)
            os.close(fd)

    def stat():
        for name in names:
            os.stat(name)

    def unlink():
        for name in names:
            os.unlink(name)

    shown, requests = [], []
    for phase, work in (("create", create), ("stat", stat), ("unlink", unlink)):
        before = served_requests()
        start = time.perf_counter()
        work()
        secs = time.perf_counter() - start
        save(os.path.join(out_dir, "meta-%s.%s.json" % (phase, run)), files / secs, "files/s")
        shown.append("%s %9.0f" % (phase, files / secs))
        if before is not None:
            after = served_requests()
            moved = {op: n - before.get(op, 0) for op, n in after.items() if n > before.get(op, 0)}
            save(os.path.join(out_dir, "meta-%s-requests.%s.json" % (phase, run)),
                 sum(moved.values()) / files, "req/file")
            requests.append("%s: %s" % (phase, ", ".join(
                "%s %.2f" % (op, n / files) for op, n in sorted(moved.items(), key=lambda kv: -kv[1]))))
    print("  ".join(shown) + " files/s")
    for line in requests:
        print("      requests per file, %s" % line)


def fio(test, fio_json, out):
    try:
        with open(fio_json) as f:
            text = f.read()
    except OSError as e:
        save(out, None, "error: no fio output")
        raise SystemExit("fio %s: %s" % (test, e))
    # fio may print warnings before the JSON document.
    try:
        doc = json.loads(text[text.index("{"):])
    except ValueError:
        save(out, None, "error: no fio result")
        raise SystemExit("fio %s: no JSON result; fio said:\n%s" % (test, text[-2000:]))
    job = doc["jobs"][0]
    if job.get("error"):
        err = job["error"]
        save(out, None, "error: %s" % os.strerror(err))
        raise SystemExit("fio %s: I/O error %d (%s)" % (test, err, os.strerror(err)))
    side = job["write"] if "write" in test else job["read"]
    if test.startswith("seq-"):
        value, unit = side["bw_bytes"] / (1 << 20), "MiB/s"
    else:
        value, unit = side["iops"], "IOPS"
    save(out, value, unit)
    print("%10.1f %s" % (value, unit))


def load_runs(results_dir, target, test):
    """{run number: (value or None, unit)} of one test on one target."""
    runs = {}
    d = os.path.join(results_dir, target)
    pattern = re.compile(re.escape(test) + r"\.(\d+)\.json$")
    for name in os.listdir(d) if os.path.isdir(d) else ():
        m = pattern.match(name)
        if m:
            with open(os.path.join(d, name)) as f:
                r = json.load(f)
            runs[int(m.group(1))] = (r["value"], r["unit"])
    return runs


def report_options(args):
    """A report command's options: --json FILE, --meta KEY=VALUE (repeated), --note TEXT
    (repeated), --sides A,B (the two result directories compared, default native,volfs).
    Returns the JSON path (or None), the meta dict and the notes; sets SIDES."""
    global SIDES
    json_out, extra, notes = None, {}, []
    while args:
        a = args.pop(0)
        if a == "--json":
            json_out = args.pop(0)
        elif a == "--sides":
            SIDES = tuple(args.pop(0).split(","))
        elif a == "--meta":
            k, _, v = args.pop(0).partition("=")
            extra[k] = int(v) if v.isdigit() else v
        elif a == "--note":
            notes.append(args.pop(0))
        else:
            raise SystemExit("unknown report option %r" % a)
    return json_out, extra, notes


def report(results_dir, args):
    json_out, extra, _ = report_options(args)
    rows = []
    counts = set()
    for test, label in TESTS:
        medians, runs, errors, unit = {}, {}, {}, ""
        for t in SIDES:
            found = load_runs(results_dir, t, test)
            if not found:
                continue
            n = max(found)
            runs[t] = [found.get(i, (None, "error: no result"))[0] for i in range(1, n + 1)]
            for i in range(1, n + 1):
                value, u = found.get(i, (None, "error: no result"))
                if value is None:
                    errors.setdefault(t, []).append("run %d: %s" % (i, u))
                else:
                    unit = u
            ok = [v for v in runs[t] if v is not None]
            medians[t] = statistics.median(ok) if ok else None
            counts.add(len(ok))
        if not runs:
            continue
        base, other = medians.get(SIDES[0]), medians.get(SIDES[1])
        ratio = other / base if base and other is not None else None
        row = {"test": test, "label": label, "unit": unit,
               SIDES[0]: base, SIDES[1]: other, "ratio": ratio, "runs": runs}
        for t in runs:
            ok = [v for v in runs[t] if v is not None]
            if ok:
                row.setdefault("min", {})[t] = min(ok)
                row.setdefault("max", {})[t] = max(ok)
        if errors:
            row["errors"] = errors
        rows.append(row)

    def num(row, target):
        v = row[target]
        if v is None:
            return "error" if target in row.get("errors", {}) else "-"
        return "%.0f" % v if v >= 100 else "%.1f" % v

    print("%-30s %-8s %12s %12s %7s" % ("test", "unit", SIDES[0], SIDES[1], "ratio"))
    print("-" * 73)
    for r in rows:
        ratio = "-" if r["ratio"] is None else "%.2fx" % r["ratio"]
        print("%-30s %-8s %12s %12s %7s" % (r["label"], r["unit"], num(r, SIDES[0]), num(r, SIDES[1]), ratio))
    if rows:
        if len(counts) == 1:
            n = "%d run%s" % (max(counts), "" if max(counts) == 1 else "s")
        else:
            n = "%d-%d runs (failed runs left out)" % (min(counts), max(counts))
        print("median of %s per side, %s and %s alternating; ratio = %s / %s" % (n, SIDES[0], SIDES[1], SIDES[1], SIDES[0]))
    for r in rows:
        for t, errs in sorted(r.get("errors", {}).items()):
            for e in errs:
                print("%s on %s failed: %s" % (r["test"], t, e))
    if json_out:
        write_json(json_out, dict(extra, results=rows))


def write_json(path, doc):
    """Writes a report as indented JSON and says where."""
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print("\nwrote %s" % path)


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "meta" and len(args) == 4:
        meta(*args)
    elif cmd == "fio" and len(args) == 3:
        fio(*args)
    elif cmd == "report":
        report(args[0], args[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
