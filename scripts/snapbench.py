#!/usr/bin/env python3
"""Helpers for scripts/snapbench.sh.

    snapbench.py bytes SIZE                   SIZE (10g, 256m, 64Gi, 4096) in bytes
    snapbench.py populate DIR FILES BYTES     FILES 4 KiB files in directories of 1000 under
                                              DIR/small, then BYTES of data in files of at
                                              most 1 GiB under DIR/data (fsynced); prints a
                                              summary, and key=value lines on stdout
    snapbench.py pwrite FILE OFFSET...        open FILE read-write, then one 4 KiB pwrite at
                                              each OFFSET in turn (no fsync); prints the
                                              milliseconds each pwrite took, space-separated
    snapbench.py fio FIO.json iops|mibs       the IOPS or MiB/s of fio's first job
    snapbench.py report METRICS RESULTS [--json FILE] [--meta k=v ...] [--note TEXT ...]
                                              the table of medians, optional JSON file

METRICS declares the rows, in order, one per line, tab-separated:
    section  -    -     TITLE
    metric   KEY  UNIT  LABEL
    ratio    KEY  x     LABEL  NUMERATOR_KEY  DENOMINATOR_KEY
RESULTS holds the measurements, one per line: KEY<TAB>VALUE (VALUE "error: ..." for a
failed run).
"""

import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchtool import report_options, write_json  # noqa: E402  (a sibling script, not a package)

SMALL = 4096
PER_DIR = 1000
CHUNK = 1 << 20
DATA_FILE_MAX = 1 << 30


def parse_bytes(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*", text, re.IGNORECASE)
    if not m:
        raise SystemExit("not a size: %r (e.g. 10g, 256m, 64Gi, 4096)" % text)
    scale = 1 << (10 * " kmgtp".index(m.group(2).lower() or " "))
    return int(float(m.group(1)) * scale)


def populate(directory, files, data_bytes):
    files, data_bytes = int(files), int(data_bytes)
    payload = b"\x5a" * SMALL
    small = os.path.join(directory, "small")
    start = time.perf_counter()
    for i in range(files):
        if i % PER_DIR == 0:
            sub = os.path.join(small, "d%04d" % (i // PER_DIR))
            os.makedirs(sub)
        fd = os.open(os.path.join(sub, "f%04d" % (i % PER_DIR)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    small_secs = time.perf_counter() - start

    # Real data, not zeros or holes: one random 1 MiB block, written over and over.
    block = os.urandom(CHUNK)
    data = os.path.join(directory, "data")
    os.makedirs(data)
    start = time.perf_counter()
    left, n = data_bytes, 0
    while left > 0:
        size = min(left, DATA_FILE_MAX)
        fd = os.open(os.path.join(data, "data%03d" % n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        done = 0
        while done < size:
            done += os.write(fd, block[:min(CHUNK, size - done)])
        os.fsync(fd)
        os.close(fd)
        left -= size
        n += 1
    data_secs = time.perf_counter() - start
    dirs = (files + PER_DIR - 1) // PER_DIR
    print(
        "  %d files of 4 KiB in %d directories: %.1f s (%.0f files/s); %d data files, %.2f GiB: %.1f s (%.0f MiB/s, fsynced)"
        % (files, dirs, small_secs, files / small_secs if small_secs else 0, n, data_bytes / (1 << 30), data_secs,
           data_bytes / (1 << 20) / data_secs if data_secs else 0),
        file=sys.stderr,
    )
    print("populate_small_files_per_s=%.0f" % (files / small_secs if small_secs else 0))
    print("populate_data_mib_per_s=%.0f" % (data_bytes / (1 << 20) / data_secs if data_secs else 0))
    print("populate_data_files=%d" % n)
    print("populate_dirs=%d" % dirs)


def pwrite(path, *offsets):
    fd = os.open(path, os.O_RDWR)
    took = []
    for off in offsets:
        buf = os.urandom(SMALL)
        start = time.perf_counter()
        n = os.pwrite(fd, buf, int(off))
        took.append(time.perf_counter() - start)
        if n != SMALL:
            raise SystemExit("short pwrite at %s: %d bytes" % (off, n))
    os.close(fd)
    print(" ".join("%.3f" % (t * 1000) for t in took))


def fio(path, what):
    try:
        with open(path) as f:
            text = f.read()
        # fio may print warnings before the JSON document.
        doc = json.loads(text[text.index("{"):])
    except (OSError, ValueError) as e:
        raise SystemExit("fio output %s: %s" % (path, e))
    job = doc["jobs"][0]
    if job.get("error"):
        raise SystemExit("fio: I/O error %d (%s)" % (job["error"], os.strerror(job["error"])))
    side = job["write"] if job["write"]["io_bytes"] else job["read"]
    print("%.1f" % (side["iops"] if what == "iops" else side["bw_bytes"] / (1 << 20)))


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 100:
        return "%.0f" % v
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


def report(metrics_path, results_path, args):
    json_out, extra, notes = report_options(args)

    runs, errors = {}, {}
    if os.path.exists(results_path):
        with open(results_path) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("\t")
                try:
                    runs.setdefault(key, []).append(float(value))
                except ValueError:
                    errors.setdefault(key, []).append(value)

    rows, medians = [], {}
    with open(metrics_path) as f:
        decl = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    for d in decl:
        kind, key, unit, label = d[:4]
        if kind == "section":
            rows.append({"section": label})
            continue
        if kind == "ratio":
            num, den = medians.get(d[4]), medians.get(d[5])
            value = num / den if num is not None and den else None
            rows.append({"metric": key, "label": label, "unit": unit, "median": value,
                         "of": [d[4], d[5]]})
            continue
        vals = runs.get(key, [])
        med = statistics.median(vals) if vals else None
        medians[key] = med
        row = {"metric": key, "label": label, "unit": unit, "median": med,
               "min": min(vals) if vals else None, "max": max(vals) if vals else None, "runs": vals}
        if key in errors:
            row["errors"] = errors[key]
        rows.append(row)

    width = max([len(r.get("label", "")) for r in rows] + [30])
    head = "%-*s %10s %-6s %10s %10s %5s" % (width, "metric", "median", "unit", "min", "max", "runs")
    print(head)
    print("-" * len(head))
    for r in rows:
        if "section" in r:
            print("[%s]" % r["section"])
            continue
        if "runs" in r:
            value = fmt(r["median"]) if r["runs"] or "errors" not in r else "error"
            print("%-*s %10s %-6s %10s %10s %5d" % (width, r["label"], value, r["unit"], fmt(r["min"]),
                                                  fmt(r["max"]), len(r["runs"])))
        else:
            print("%-*s %10s %-6s" % (width, r["label"], "-" if r["median"] is None else "%.2f" % r["median"], r["unit"]))
    for note in notes:
        print(note)
    for r in rows:
        for e in r.get("errors", []):
            print("%s: a run failed: %s" % (r["metric"], e))
    if json_out:
        write_json(json_out, dict(extra, results=[r for r in rows if "section" not in r], notes=notes))


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "bytes" and len(args) == 1:
        print(parse_bytes(args[0]))
    elif cmd == "populate" and len(args) == 3:
        populate(*args)
    elif cmd == "pwrite" and len(args) >= 2:
        pwrite(*args)
    elif cmd == "fio" and len(args) == 2 and args[1] in ("iops", "mibs"):
        fio(*args)
    elif cmd == "report" and len(args) >= 2:
        report(args[0], args[1], args[2:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
