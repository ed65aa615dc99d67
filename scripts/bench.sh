#!/usr/bin/env bash
# Benchmarks volfs against the native file system in the same run: a native directory under
# /var/tmp and a volfs mount whose pool lives on the same disk. Each test runs on the native
# directory first, then on volfs.
#   fio (scripts/fio/bench.fio): 1 MiB seq write; 1 MiB seq read cold (after dropping the
#   page cache) and cached; 4 KiB rand read with 1 and 4 jobs; 4 KiB rand write + end_fsync.
#   metadata (scripts/benchtool.py meta): create, stat and unlink of small files.
# Prints a table (test, native, volfs, ratio = volfs / native).
#
# Usage: scripts/bench.sh [--json FILE] [--runtime SECONDS] [--size SIZE] [--files N]
#                         [--only "seq-write meta ..."]
#   --runtime  seconds per fio run (default 10, or BENCH_RUNTIME; BENCH_RUNTIME=2 for a smoke run)
#   --size     fio test file size (default 1g, or BENCH_SIZE)
#   --files    files in the metadata run (default 10000, or BENCH_FILES)
#   --only     fio section names and/or "meta" (default: all)
#   --native   directory to create the native test dir in (default /var/tmp)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	sed -n '/^# Usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

json_out=""
runtime=${BENCH_RUNTIME:-10}
size=${BENCH_SIZE:-1g}
files=${BENCH_FILES:-10000}
native_parent=/var/tmp
only="seq-write seq-read-cold seq-read-cached rand-read-1 rand-read-4 rand-write-fsync meta"
while (($#)); do
	case $1 in
	--json) json_out=$(realpath -m "${2:?}") && shift ;;
	--runtime) runtime=${2:?} && shift ;;
	--size) size=${2:?} && shift ;;
	--files) files=${2:?} && shift ;;
	--only) only=${2:?} && shift ;;
	--native) native_parent=${2:?} && shift ;;
	-h | --help) usage ;;
	*) usage ;;
	esac
	shift
done
[[ -z ${VOLFS_TEST_DIR:-} ]] || vf_warn "VOLFS_TEST_DIR is set: the volfs column measures $VOLFS_TEST_DIR (native vs native)"

vf_require fio python3
jobfile="$VF_ROOT/scripts/fio/bench.fio"
tool="$VF_ROOT/scripts/benchtool.py"

vf_setup bench
native=$(mktemp -d "$native_parent/vfbench.XXXX")
# shellcheck disable=SC2016 # expanded when the hook runs
VF_CLEANUP_HOOKS+=('rm -rf "$native"')
if [[ $(stat -c %d "$native") != $(stat -c %d "$VF_POOL") ]]; then
	vf_warn "native dir $native and pool $VF_POOL are on different file systems"
fi
declare -A dirs=([native]="$native" [volfs]="$VF_MNT/bench")
mkdir -p "${dirs[volfs]}"
results="$VF_TMP/results"
mkdir -p "$results/native" "$results/volfs"

failed=()
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

vf_log "fio: file $size, ${runtime}s per run; native: $native, volfs: ${dirs[volfs]}"
for test in seq-write seq-read-cold seq-read-cached rand-read-1 rand-read-4 rand-write-fsync; do
	[[ " $only " == *" $test "* ]] || continue
	for target in native volfs; do
		[[ $test == seq-read-cold ]] && drop_caches
		out="$VF_TMP/fio-$target-$test.json"
		BENCH_DIR=${dirs[$target]} BENCH_SIZE=$size BENCH_RUNTIME=$runtime \
			fio --section="$test" --output-format=json --output="$out" "$jobfile" || true
		printf '%-7s' "$target"
		python3 "$tool" fio "$test" "$out" "$results/$target/$test.json" || failed+=("$test on $target")
	done
done
for target in native volfs; do
	rm -f "${dirs[$target]}/bench.file"
done

if [[ " $only " == *" meta "* ]]; then
	vf_log "metadata: create, stat, unlink $files files of 4 KiB"
	for target in native volfs; do
		echo "$target:"
		python3 "$tool" meta "${dirs[$target]}/meta" "$files" "$results/$target" || failed+=("metadata on $target")
		rm -rf "${dirs[$target]}/meta"
	done
fi

echo
report=(python3 "$tool" report "$results"
	--meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta "kernel=$(uname -r)"
	--meta "cpus=$(nproc)" --meta "runtime_s=$runtime" --meta "file_size=$size"
	--meta "meta_files=$files" --meta "native_dir=$native" --meta "volfs_version=$("$VOLFS" --version 2>/dev/null || echo unknown)")
if [[ -n $json_out ]]; then
	report+=(--json "$json_out")
fi
"${report[@]}"
if ((${#failed[@]})); then
	vf_die "failed: ${failed[*]}"
fi
