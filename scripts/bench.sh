#!/usr/bin/env bash
# Benchmarks volfs against the native file system in the same run: a native directory under
# /var/tmp and a volfs mount whose pool lives on the same disk. Every test runs several times,
# alternating native and volfs; the table shows the median of each side and their ratio.
#   fio (scripts/fio/bench.fio): 1 MiB seq write of the whole file including the final fsync;
#   1 MiB seq read cold (page cache dropped) and cached; 4 KiB rand read with 1 and 4 jobs;
#   4 KiB rand write + end_fsync. Runs go native, volfs, native, volfs, ...; before every
#   run the page cache is written back and dropped (sync; drop_caches), so no run inherits
#   dirty pages from the one before.
#   metadata (scripts/benchtool.py meta): create, stat and unlink of small files, each run in
#   a fresh directory, after sync and drop_caches; the side that goes first alternates. On
#   the volfs side each phase also reports the FUSE requests the daemon served per file, by
#   operation (from `volfs stats`): a figure that does not depend on the machine's noise.
# Prints a table (test, unit, native median, volfs median, ratio = volfs / native).
#
# Usage: scripts/bench.sh [--json FILE] [--repeat N] [--runtime SECONDS] [--size SIZE]
#                         [--files N] [--only "seq-write meta ..."] [--native DIR]
#                         [--capacity SIZE]
#   --json     also write the medians and every run to FILE
#   --repeat   runs per test and side (default 3, or BENCH_REPEAT)
#   --runtime  seconds per time-based fio run (default 10, or BENCH_RUNTIME; 2 for a smoke run)
#   --size     fio test file size (default 1g, or BENCH_SIZE)
#   --files    files in the metadata run (default 10000, or BENCH_FILES)
#   --only     fio section names and/or "meta" (default: all)
#   --native   directory to create the native test dir in (default /var/tmp)
#   --capacity give the volfs volume this capacity (default none, or BENCH_CAPACITY): the
#              daemon then serves file I/O itself to hold writes to it
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

json_out=""
repeat=${BENCH_REPEAT:-3}
runtime=${BENCH_RUNTIME:-10}
size=${BENCH_SIZE:-1g}
files=${BENCH_FILES:-10000}
native_parent=/var/tmp
capacity=${BENCH_CAPACITY-}
fio_tests=(seq-write seq-read-cold seq-read-cached rand-read-1 rand-read-4 rand-write-fsync)
only="${fio_tests[*]} meta"
while (($#)); do
	case $1 in
	--json) json_out=$(realpath -m "${2:?}") && shift ;;
	--repeat) repeat=${2:?} && shift ;;
	--runtime) runtime=${2:?} && shift ;;
	--size) size=${2:?} && shift ;;
	--files) files=${2:?} && shift ;;
	--only) only=${2:?} && shift ;;
	--native) native_parent=${2:?} && shift ;;
	--capacity) capacity=${2:?} && shift ;;
	-h | --help) vf_usage ;;
	*) vf_usage ;;
	esac
	shift
done
vf_require_count "--repeat (BENCH_REPEAT)" "$repeat"
vf_require_count "--files (BENCH_FILES)" "$files"
for test in $only; do
	[[ " ${fio_tests[*]} meta " == *" $test "* ]] || vf_die "--only: unknown test '$test' (known: ${fio_tests[*]} meta)"
done
[[ -z ${VOLFS_TEST_DIR:-} ]] || vf_warn "VOLFS_TEST_DIR is set: the volfs column measures $VOLFS_TEST_DIR (native vs native)"

vf_require fio python3
jobfile="$VF_ROOT/scripts/fio/bench.fio"
tool="$VF_ROOT/scripts/benchtool.py"

vf_setup bench "$capacity"
native=$(mktemp -d "$native_parent/vfbench.XXXX")
# The placement hint volfs gives its data directory (ext4's "top directory" flag), so both
# sides create files in fresh block groups rather than among inodes freed by earlier runs.
chattr +T "$native" 2>/dev/null || true
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

# Write back every dirty page and empty the page cache, dentry and inode caches.
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# fio_run TEST TARGET OUT.json: one run of a bench.fio section on one side, after drop_caches.
fio_run() {
	local test=$1 target=$2 out=$3
	drop_caches
	BENCH_DIR=${dirs[$target]} BENCH_SIZE=$size BENCH_RUNTIME=$runtime \
		fio --section="$test" --output-format=json --output="$out" "$jobfile" || true
}

selected_fio=()
for test in "${fio_tests[@]}"; do
	[[ " $only " == *" $test "* ]] && selected_fio+=("$test")
done
if ((${#selected_fio[@]})); then
	vf_log "fio: file $size, ${runtime}s per time-based run, $repeat runs per side; native: $native, volfs: ${dirs[volfs]}"
	if [[ " $only " != *" seq-write "* ]]; then
		# The other sections read or rewrite the file seq-write leaves behind.
		for target in native volfs; do
			fio_run seq-write "$target" "$VF_TMP/fio-$target-prepare.json"
			[[ -s ${dirs[$target]}/bench.file ]] || vf_die "could not write the test file on $target"
		done
	fi
fi
for test in "${selected_fio[@]}"; do
	for ((run = 1; run <= repeat; run++)); do
		for target in native volfs; do
			# Each seq-write run writes a new file instead of overwriting the last run's.
			[[ $test == seq-write ]] && rm -f "${dirs[$target]}/bench.file"
			out="$VF_TMP/fio-$target-$test-$run.json"
			fio_run "$test" "$target" "$out"
			printf '  %-17s run %d/%d  %-7s' "$test" "$run" "$repeat" "$target"
			python3 "$tool" fio "$test" "$out" "$results/$target/$test.$run.json" ||
				failed+=("$test on $target (run $run)")
		done
	done
done
for target in native volfs; do
	rm -f "${dirs[$target]}/bench.file"
done

if [[ " $only " == *" meta "* ]]; then
	vf_log "metadata: create, stat, unlink $files files of 4 KiB, $repeat runs per side"
	for ((run = 1; run <= repeat; run++)); do
		order=(native volfs)
		((run % 2)) || order=(volfs native)
		for target in "${order[@]}"; do
			dir="${dirs[$target]}/meta.$run"
			drop_caches
			printf '  %-17s run %d/%d  %-7s' metadata "$run" "$repeat" "$target"
			# The volfs side also counts the FUSE requests each phase took (`volfs stats`).
			counted=()
			[[ $target == volfs && -z ${VOLFS_TEST_DIR:-} ]] && counted=(BENCH_VOLFS="$VOLFS --pool $VF_POOL" BENCH_VOLUME=bench)
			env "${counted[@]}" python3 "$tool" meta "$dir" "$files" "$results/$target" "$run" ||
				failed+=("metadata on $target (run $run)")
			rm -rf "$dir"
		done
	done
fi

echo
vf_report "$tool" "$results" "$json_out" --meta "repeat=$repeat" --meta "runtime_s=$runtime" \
	--meta "capacity=${capacity:-none}" --meta "file_size=$size" --meta "meta_files=$files" --meta "native_dir=$native" \
	--meta "order=fio: native then volfs in every run; metadata: native first in odd runs, volfs first in even runs"
if ((${#failed[@]})); then
	vf_die "failed: ${failed[*]}"
fi
