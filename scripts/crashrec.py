#!/usr/bin/env python3
"""Durability workload for scripts/crash.sh.

    crashrec.py write  DIR ROUND ACKLOG   append records until an error or the time limit
    crashrec.py verify DIR ROUND ACKLOG   check that everything ACKLOG acknowledges is there

`write` works in DIR (inside the file system under test) and logs to ACKLOG (which must be
on another file system) each operation only after it has been made durable:

    R <i>     record i of DIR/records-<ROUND> is written and fsync'd. Records are REC_SIZE
              bytes, appended in order; each carries a header (magic, round, index), a
              payload derived from (round, index) and a CRC32 of both.
    F <name>  DIR/files-<ROUND>/<name> was created, written, fsync'd, and its directory
              fsync'd
    S <gen>   DIR/state-<ROUND> was replaced by generation <gen> the atomic way (write a
              temp file, fsync it, rename it over, fsync the directory)

`verify` checks that every acknowledged record is present and intact, every acknowledged file
exists with its content, and the state file holds an intact generation no older than the last
acknowledged one. Exit status 0 when all holds, 1 otherwise.
"""

import hashlib
import os
import struct
import sys
import time
import zlib

REC_SIZE = 4100  # not a multiple of the page size: records straddle pages
MAGIC = b"VOLFSREC"
HEADER = struct.Struct("<8sIQ")  # magic, round, index
FILE_EVERY = 32  # records between two small-file creations
STATE_EVERY = 16  # records between two state replacements
TIME_LIMIT = 120.0  # seconds; the crash test kills the daemon long before


def record(rnd, index):
    header = HEADER.pack(MAGIC, rnd, index)
    seed = hashlib.sha256(b"%d:%d" % (rnd, index)).digest()
    body_len = REC_SIZE - HEADER.size - 4
    body = (seed * (body_len // len(seed) + 1))[:body_len]
    crc = zlib.crc32(header + body)
    return header + body + struct.pack("<I", crc)


def small_file(name):
    seed = hashlib.sha256(name.encode()).digest()
    return seed * (1 + len(name) % 7)


def state_content(gen):
    text = b"generation %d\n" % gen
    return text + hashlib.sha256(text).hexdigest().encode() + b"\n"


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def write(d, rnd, acklog):
    files_dir = os.path.join(d, "files-%d" % rnd)
    os.makedirs(files_dir, exist_ok=True)
    fsync_dir(d)
    state = os.path.join(d, "state-%d" % rnd)
    path = os.path.join(d, "records-%d" % rnd)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fsync_dir(d)
    deadline = time.monotonic() + TIME_LIMIT
    with open(acklog, "a", buffering=1) as log:
        print("started", file=sys.stderr, flush=True)
        i = 0
        while time.monotonic() < deadline:
            write_all(fd, record(rnd, i))
            os.fsync(fd)
            log.write("R %d\n" % i)
            if i % FILE_EVERY == FILE_EVERY - 1:
                name = "f%d" % (i // FILE_EVERY)
                ffd = os.open(os.path.join(files_dir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                write_all(ffd, small_file(name))
                os.fsync(ffd)
                os.close(ffd)
                fsync_dir(files_dir)
                log.write("F %s\n" % name)
            if i % STATE_EVERY == STATE_EVERY - 1:
                gen = i // STATE_EVERY
                tmp = state + ".tmp"
                sfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                write_all(sfd, state_content(gen))
                os.fsync(sfd)
                os.close(sfd)
                os.rename(tmp, state)
                fsync_dir(d)
                log.write("S %d\n" % gen)
            i += 1
    os.close(fd)
    print("time limit reached after %d records" % i, file=sys.stderr)


def verify(d, rnd, acklog):
    records, files, gens = 0, [], []
    with open(acklog) as log:
        for line in log:
            kind, _, value = line.strip().partition(" ")
            if kind == "R":
                if int(value) != records:
                    raise SystemExit("acklog out of order at %r" % line)
                records += 1
            elif kind == "F":
                files.append(value)
            elif kind == "S":
                gens.append(int(value))
    errors = []

    path = os.path.join(d, "records-%d" % rnd)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = None
        if records:
            errors.append("%s is missing, %d records were acknowledged" % (path, records))
    if data is not None:
        present = len(data) // REC_SIZE
        if present < records:
            errors.append(
                "%s holds %d bytes (%d whole records), %d records were acknowledged"
                % (path, len(data), present, records)
            )
        bad = []
        for i in range(min(records, present)):
            got = data[i * REC_SIZE : (i + 1) * REC_SIZE]
            if got != record(rnd, i):
                bad.append(i)
        if bad:
            i = bad[0]
            got = data[i * REC_SIZE : (i + 1) * REC_SIZE]
            magic, r, idx = HEADER.unpack_from(got)
            crc_ok = zlib.crc32(got[:-4]) == struct.unpack("<I", got[-4:])[0]
            errors.append(
                "%d acknowledged records are damaged, first at index %d (offset %d): "
                "header magic=%r round=%d index=%d, crc %s, all zero: %s"
                % (len(bad), i, i * REC_SIZE, magic, r, idx, "ok" if crc_ok else "BAD", got.count(0) == len(got))
            )
        extra = len(data) - records * REC_SIZE
        print(
            "round %d: %d records acknowledged, %d bytes past them (unacknowledged tail)"
            % (rnd, records, max(extra, 0))
        )

    files_dir = os.path.join(d, "files-%d" % rnd)
    missing, damaged = [], []
    for name in files:
        try:
            with open(os.path.join(files_dir, name), "rb") as f:
                if f.read() != small_file(name):
                    damaged.append(name)
        except FileNotFoundError:
            missing.append(name)
    if missing:
        errors.append("%d acknowledged files missing in %s: %s" % (len(missing), files_dir, " ".join(missing[:10])))
    if damaged:
        errors.append("%d acknowledged files damaged in %s: %s" % (len(damaged), files_dir, " ".join(damaged[:10])))
    print("round %d: %d acknowledged files checked" % (rnd, len(files)))

    if gens:
        state = os.path.join(d, "state-%d" % rnd)
        try:
            with open(state, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            content = None
            errors.append("%s missing, generation %d was acknowledged" % (state, gens[-1]))
        if content is not None:
            first = content.split(b"\n", 1)[0]
            try:
                gen = int(first.split()[1])
            except (IndexError, ValueError):
                gen = -1
            if gen < 0 or content != state_content(gen):
                errors.append("%s is torn or garbled: %r" % (state, content[:80]))
            elif gen < gens[-1]:
                errors.append("%s holds generation %d, generation %d was acknowledged" % (state, gen, gens[-1]))
            else:
                print("round %d: state generation %d (last acknowledged %d)" % (rnd, gen, gens[-1]))

    for e in errors:
        print("round %d: ERROR: %s" % (rnd, e))
    return 1 if errors else 0


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("write", "verify"):
        raise SystemExit(__doc__)
    mode, d, rnd, acklog = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    if mode == "write":
        write(d, rnd, acklog)
        return 0
    return verify(d, rnd, acklog)


if __name__ == "__main__":
    sys.exit(main())
