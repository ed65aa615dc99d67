#!/usr/bin/env bash
# Measures what one FUSE round trip costs on this machine, whatever the filesystem: a
# filesystem with no work in it (libfuse's low-level API, every attribute expiring at once, so
# each stat is one GETATTR to the daemon and back) against stat on a native directory, in the
# same run. The ratio it prints bounds the stat row of scripts/bench.sh for any FUSE
# filesystem here; create and unlink need 4 and 2 round trips (see README, Performance).
#
# Usage: scripts/fuse-floor.sh [--files N] [--repeat N]
#   --files   names stat'ed per pass (default 10000)
#   --repeat  passes per side, alternating native and FUSE; medians (default 5)
# Needs gcc and libfuse3-dev (scripts/deps.sh installs them).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

files=10000
repeat=5
while (($#)); do
	case $1 in
	--files) files=${2:?} && shift ;;
	--repeat) repeat=${2:?} && shift ;;
	*) vf_usage ;;
	esac
	shift
done
vf_require_count --files "$files"
vf_require_count --repeat "$repeat"
vf_require_root
vf_require gcc pkg-config python3 fusermount3
pkg-config --exists fuse3 || vf_die "libfuse3-dev not found; run scripts/deps.sh"

vf_tmp
cat >"$VF_TMP/nullfs.c" <<'EOF'
/* A FUSE filesystem that does nothing: a root directory holding f0, f1, ... as empty files.
 * Attributes expire at once, so every stat asks the daemon. */
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void fill(fuse_ino_t ino, struct stat *st) {
	memset(st, 0, sizeof *st);
	st->st_ino = ino;
	st->st_mode = ino == FUSE_ROOT_ID ? S_IFDIR | 0755 : S_IFREG | 0644;
	st->st_nlink = ino == FUSE_ROOT_ID ? 2 : 1;
}

static void lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
	struct fuse_entry_param e;
	if (parent != FUSE_ROOT_ID || name[0] != 'f') {
		fuse_reply_err(req, ENOENT);
		return;
	}
	memset(&e, 0, sizeof e);
	e.ino = 2 + strtoull(name + 1, NULL, 10);
	e.entry_timeout = 3600;
	fill(e.ino, &e.attr);
	fuse_reply_entry(req, &e);
}

static void getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
	struct stat st;
	(void)fi;
	fill(ino, &st);
	fuse_reply_attr(req, &st, 0);
}

static const struct fuse_lowlevel_ops ops = {.lookup = lookup, .getattr = getattr};

int main(int argc, char *argv[]) {
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct fuse_session *se;
	int ret;
	if (fuse_parse_cmdline(&args, &opts) != 0 || !opts.mountpoint)
		return 2;
	se = fuse_session_new(&args, &ops, sizeof ops, NULL);
	if (!se || fuse_session_mount(se, opts.mountpoint) != 0)
		return 1;
	ret = fuse_session_loop_mt(se, NULL);
	fuse_session_unmount(se);
	return ret;
}
EOF
# shellcheck disable=SC2046 # pkg-config prints several words
gcc -O2 -Wall -o "$VF_TMP/nullfs" "$VF_TMP/nullfs.c" $(pkg-config --cflags --libs fuse3)

native="$VF_TMP/native"
null="$VF_TMP/null"
mkdir -p "$native" "$null"
python3 - "$native" "$files" <<'EOF'
import os, sys
for i in range(int(sys.argv[2])):
    open(os.path.join(sys.argv[1], "f%d" % i), "w").close()
EOF
"$VF_TMP/nullfs" -f "$null" &
# shellcheck disable=SC2034 # read by the cleanup hook
nullfs_pid=$!
# shellcheck disable=SC2016 # expanded when the hook runs
VF_CLEANUP_HOOKS+=('fusermount3 -u "$null" 2>/dev/null; kill "$nullfs_pid" 2>/dev/null || true')
for _ in $(seq 50); do
	vf_is_mounted "$null" && break
	sleep 0.1
done
vf_is_mounted "$null" || vf_die "the null filesystem did not mount at $null"

python3 - "$native" "$null" "$files" "$repeat" <<'EOF'
import os, statistics, sys, time

native, null, files, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def per_stat(directory):
    names = [os.path.join(directory, "f%d" % i) for i in range(files)]
    start = time.perf_counter()
    for name in names:
        os.stat(name)
    return (time.perf_counter() - start) / files * 1e6

# A first pass fills the dentry caches on both sides.
per_stat(native), per_stat(null)
runs = {"native": [], "fuse": []}
for _ in range(repeat):
    runs["native"].append(per_stat(native))
    runs["fuse"].append(per_stat(null))
n, f = statistics.median(runs["native"]), statistics.median(runs["fuse"])
print("stat, native directory:            %7.2f us" % n)
print("stat, FUSE filesystem doing nothing: %5.2f us  (one round trip to the daemon)" % f)
print("ratio native / FUSE:               %7.3f  (the most a FUSE filesystem's stat reaches here)" % (n / f))
print("median of %d passes of %d stats per side, alternating" % (repeat, files))
EOF
