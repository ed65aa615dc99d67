#!/usr/bin/env python3
"""Helpers for scripts/bench.sh and scripts/appbench.sh.

    benchtool.py meta DIR FILES OUT_DIR RUN  create, stat and unlink FILES 4 KiB files in DIR;
                                             with BENCH_VOLFS ("volfs --pool POOL") and
                                             BENCH_VOLUME set, also the FUSE requests the
                                             daemon served per file in each phase
    benchtool.py fio TEST FIO.json OUT.json  pull the number that matters out of fio's JSON
    benchtool.py timed TEST OUT_DIR RUN [--rate N UNIT] -- CMD...
                                             run CMD (its output to OUT_DIR/TEST.log) and
                                             save its wall time in seconds, or N / seconds
                                             in UNIT; with BENCH_VOLFS and BENCH_VOLUME set,
                                             also the FUSE requests the daemon served for it
    benchtool.py cproject DIR FILES          a C project to build with make: FILES sources,
                                             a shared header, a Makefile with -MMD
    benchtool.py sql FILE ROWS PER_TX        ROWS INSERT statements, PER_TX to a transaction
                                             (1: autocommit, each its own transaction)
    benchtool.py report RESULTS_DIR [--json FILE] [--meta k=v ...] [--sides A,B[,C...]]
                                             table of the medians of each side and their
                                             ratios to the first side, optional JSON file
                                             with the medians and every run

Results are files RESULTS_DIR/<target>/<test>.<run>.json, each {"value": float, "unit": str}
(value null and unit "error: ..." for a failed run); <run> counts from 1. A ratio is
side / first side, except for times (unit "s"): first side / side, so that below 1 is slower
than the first side for every row.
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
# scripts/appbench.sh; each test's FUSE requests (TEST-requests) follow it.
APP_TESTS = [
    ("tree-untar", "tar -x source tree"),
    ("tree-status-first", "git status, first (reads all)"),
    ("tree-status-cold", "git status, cold"),
    ("tree-status-warm", "git status, warm"),
    ("tree-checkout", "git checkout other commit"),
    ("tree-cp", "cp -a tree"),
    ("tree-rm", "rm -rf tree copy"),
    ("sqlite-tx1", "sqlite3 insert, 1 row/tx"),
    ("sqlite-tx1000", "sqlite3 insert, 1000 rows/tx"),
    ("build-make", "make -j2, C project"),
]
for _test, _label in APP_TESTS:
    TESTS += [(_test, _label), (_test + "-requests", "  FUSE requests")]
# The two sides a report compares, the baseline first (report --sides changes them).
SIDES = ("native", "volfs")


def save(path, value, unit):
    with open(path, "w") as f:
        json.dump({"value": value, "unit": unit}, f)


def served():
    """{operation: (requests, seconds spent serving them)} of the volfs daemon on BENCH_VOLUME,
    from `volfs stats`; None when BENCH_VOLFS is not set (the native side)."""
    volfs, volume = os.environ.get("BENCH_VOLFS"), os.environ.get("BENCH_VOLUME")
    if not volfs or not volume:
        return None
    out = subprocess.run(volfs.split() + ["stats", "--json"], capture_output=True, check=True).stdout
    for v in json.loads(out)["volumes"]:
        if v["volume"] == volume and v.get("snapshot") is None:
            return {r["op"]: (sum(r["latency"]["buckets"]), r["latency"]["sum_seconds"]) for r in v["requests"]}
    return {}


def served_since(before):
    """What the daemon served since `before` (what served() returned then), most first:
    [(operation, requests, mean µs per request)]."""
    moved = []
    for op, (n, secs) in served().items():
        n0, secs0 = before.get(op, (0, 0.0))
        if n > n0:
            moved.append((op, n - n0, (secs - secs0) / (n - n0) * 1e6))
    return sorted(moved, key=lambda m: -m[1])


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
        before = served()
        start = time.perf_counter()
        work()
        secs = time.perf_counter() - start
        save(os.path.join(out_dir, "meta-%s.%s.json" % (phase, run)), files / secs, "files/s")
        shown.append("%s %9.0f" % (phase, files / secs))
        if before is not None:
            moved = served_since(before)
            save(os.path.join(out_dir, "meta-%s-requests.%s.json" % (phase, run)),
                 sum(n for _, n, _ in moved) / files, "req/file")
            requests.append("%s: %s" % (phase, ", ".join(
                "%s %.2f (%.0f µs)" % (op, n / files, us) for op, n, us in moved)))
    print("  ".join(shown) + " files/s")
    for line in requests:
        print("      requests per file (mean service time), %s" % line)


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


def timed(test, out_dir, run, args):
    rate = None
    while args and args[0] != "--":
        a = args.pop(0)
        if a == "--rate":
            rate = (float(args.pop(0)), args.pop(0))
        else:
            raise SystemExit("timed: unknown option %r" % a)
    cmd = args[1:]
    if not cmd:
        raise SystemExit("timed: no command after --")
    out = os.path.join(out_dir, "%s.%s.json" % (test, run))
    log = os.path.join(out_dir, "%s.log" % test)
    before = served()
    with open(log, "ab") as f:
        start = time.perf_counter()
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f).returncode
        secs = time.perf_counter() - start
    moved = served_since(before) if before is not None else None
    if rc != 0:
        save(out, None, "error: %s exited %d" % (cmd[0], rc))
        with open(log, errors="replace") as f:
            tail = f.read()[-2000:]
        raise SystemExit("%s: %s exited %d; its output:\n%s" % (test, " ".join(cmd), rc, tail))
    if rate:
        value, unit = rate[0] / secs, rate[1]
        print("%10.0f %-7s" % (value, unit), end="")
    else:
        value, unit = secs, "s"
        print("%10.2f %-7s" % (value, unit), end="")
    save(out, value, unit)
    if moved is not None:
        total = sum(n for _, n, _ in moved)
        with open(os.path.join(out_dir, "%s-requests.%s.json" % (test, run)), "w") as f:
            json.dump({"value": total, "unit": "requests", "ops": {op: n for op, n, _ in moved}}, f)
        print("  %8d requests: %s" % (total, ", ".join("%s %d" % (op, n) for op, n, _ in moved[:6])), end="")
    print()


def cproject(directory, files):
    """A C project: FILES sources of a few functions each under src/, one header they all
    include, a main that calls them, and a Makefile that builds obj/*.o (with -MMD
    dependency files) and links them. The same text every time."""
    files = int(files)
    os.makedirs(os.path.join(directory, "src"))
    os.makedirs(os.path.join(directory, "include"))
    units = range(files)

    def put(name, text):
        with open(os.path.join(directory, name), "w") as out:
            out.write(text)

    put("include/common.h",
        "#ifndef COMMON_H\n#define COMMON_H\n#include <stdint.h>\n#include <stddef.h>\n"
        "#include <string.h>\n#include <stdio.h>\n#include <stdlib.h>\n"
        "struct item { uint64_t key; uint32_t len; char name[48]; };\n"
        + "".join("uint64_t unit%d(const struct item *items, size_t n);\n" % i for i in units)
        + "#endif\n")
    for i in units:
        text = ['#include "common.h"\n\n']
        for j in range(4):
            text.append(
                "static uint64_t mix%d(uint64_t x)\n{\n"
                "\tx ^= x >> %d;\n\tx *= 0x%xULL;\n\tx ^= x >> %d;\n\treturn x;\n}\n\n"
                % (j, 13 + j, 0x9E3779B97F4A7C15 ^ (i * 8 + j), 29 - j))
            text.append(
                "static size_t pass%d(const struct item *items, size_t n, char *buf, size_t cap)\n{\n"
                "\tsize_t used = 0;\n"
                "\tfor (size_t k = 0; k < n; k++) {\n"
                "\t\tswitch ((mix%d(items[k].key) + k) %% 5) {\n"
                "\t\tcase 0: used += (size_t)snprintf(buf + used %% cap, cap - used %% cap, \"%%s-%d\", items[k].name); break;\n"
                "\t\tcase 1: used += items[k].len * %d; break;\n"
                "\t\tcase 2: used ^= (size_t)mix%d(used + %d); break;\n"
                "\t\tcase 3: used += strlen(items[k].name) + %d; break;\n"
                "\t\tdefault: used = used * 31 + %d; break;\n"
                "\t\t}\n\t}\n\treturn used;\n}\n\n" % (j, j, j, j + 1, j, i, j, i + j))
        text.append("uint64_t unit%d(const struct item *items, size_t n)\n{\n"
                    "\tchar buf[256];\n\tuint64_t sum = 0;\n" % i)
        text.extend("\tsum += pass%d(items, n, buf, sizeof buf);\n" % j for j in range(4))
        text.append("\treturn sum;\n}\n")
        put("src/unit%d.c" % i, "".join(text))
    put("src/main.c",
        '#include "common.h"\n\nint main(void)\n{\n'
        '\tstruct item items[4] = {{1, 2, "a"}, {3, 4, "b"}, {5, 6, "c"}, {7, 8, "d"}};\n'
        '\tuint64_t sum = 0;\n'
        + "".join("\tsum += unit%d(items, 4);\n" % i for i in units)
        + '\tprintf("%llu\\n", (unsigned long long)sum);\n\treturn 0;\n}\n')
    put("Makefile",
        "CC ?= cc\nCFLAGS ?= -O2 -Wall\n"
        "SRCS := $(wildcard src/*.c)\nOBJS := $(SRCS:src/%.c=obj/%.o)\n\n"
        "prog: $(OBJS)\n\t$(CC) -o $@ $^\n\n"
        "obj/%.o: src/%.c | obj\n\t$(CC) $(CFLAGS) -MMD -MP -Iinclude -c -o $@ $<\n\n"
        "obj:\n\tmkdir -p $@\n\n-include $(OBJS:.o=.d)\n")


def sql(path, rows, per_tx):
    """ROWS inserts into t (see appbench.sh), PER_TX rows to a transaction."""
    rows, per_tx = int(rows), int(per_tx)
    with open(path, "w") as f:
        for i in range(rows):
            if per_tx > 1 and i % per_tx == 0:
                f.write("BEGIN;\n")
            f.write("INSERT INTO t(k, v) VALUES (%d, '%s');\n"
                    % ((i * 2654435761) % 1000003, ("%016x" % ((i * 0x9E3779B97F4A7C15) & (2**64 - 1))) * 4))
            if per_tx > 1 and (i % per_tx == per_tx - 1 or i == rows - 1):
                f.write("COMMIT;\n")


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
        base = medians.get(SIDES[0])
        ratios = {}
        for t in SIDES[1:]:
            other = medians.get(t)
            if not base or not other:
                ratios[t] = None
            else:
                # Times: the first side's over this one's, so that below 1 is slower here too.
                ratios[t] = base / other if unit == "s" else other / base
        row = {"test": test, "label": label, "unit": unit}
        row.update((t, medians.get(t)) for t in SIDES)
        row.update(ratio=ratios[SIDES[1]], runs=runs)
        if len(SIDES) > 2:
            row["ratios"] = ratios
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
        if row["unit"] == "s" and v < 10:
            return "%.2f" % v
        return "%.0f" % v if v >= 100 else "%.1f" % v

    def ratio(row, target):
        r = row["ratio"] if len(SIDES) == 2 else row["ratios"][target]
        return "-" if r is None else "%.2fx" % r

    others = SIDES[1:]
    if len(SIDES) == 2:
        heads = ["ratio"]
        fmt = "%-30s %-8s %12s %12s %7s"
    else:
        heads = ["%s/%s" % (t, SIDES[0]) for t in others]
        fmt = "%-30s %-8s" + " %10s" * len(SIDES) + "".join(" %%%ds" % max(7, len(h)) for h in heads)
    header = fmt % (("test", "unit") + tuple(SIDES) + tuple(heads))
    print(header)
    print("-" * max(73, len(header)))
    for r in rows:
        print(fmt % ((r["label"], r["unit"]) + tuple(num(r, t) for t in SIDES) + tuple(ratio(r, t) for t in others)))
    if rows:
        if len(counts) == 1:
            n = "%d run%s" % (max(counts), "" if max(counts) == 1 else "s")
        else:
            n = "%d-%d runs (failed runs left out)" % (min(counts), max(counts))
        names = "%s and %s" % (", ".join(SIDES[:-1]), SIDES[-1])
        print("median of %s per side, %s alternating; ratio = %s / %s" % (
            n, names, "side" if len(SIDES) > 2 else SIDES[1], SIDES[0]), end="")
        if any(r["unit"] == "s" for r in rows):
            print(", for times (s) %s / %s" % (SIDES[0], "side" if len(SIDES) > 2 else SIDES[1]), end="")
        print()
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
    elif cmd == "timed" and len(args) >= 5:
        timed(args[0], args[1], args[2], args[3:])
    elif cmd == "cproject" and len(args) == 2:
        cproject(*args)
    elif cmd == "sql" and len(args) == 3:
        sql(*args)
    elif cmd == "report":
        report(args[0], args[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
