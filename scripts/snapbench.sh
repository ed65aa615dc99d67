#!/usr/bin/env bash
# Benchmarks volfs snapshots and clones. All volumes have a capacity (64Gi), so the daemon
# serves their file I/O and a snapshot is allowed while files are open.
#   commands: wall time of `volfs snapshot create`, `volfs volume create --from-volume`
#   (clone), `--from-snapshot` (restore), `volfs snapshot delete` and `volfs volume delete`,
#   each timed as one process from its start to its exit, on a volume holding FILES small
#   files and DATA bytes of file data, and on an empty volume (runs alternate between the
#   two). `volfs mounts` and `volfs snapshot list VOLUME` are timed the same way: the first
#   is a no-op, the process start and control-socket round trip every command pays; the
#   second reads the records of the pool's inodes, so it costs more in a bigger pool.
#   first write: in every run a new snapshot of a volume holding a 1 GiB file, then one
#   4 KiB pwrite to the file (no fsync), then a second one at another offset; each pwrite is
#   timed alone (time.perf_counter around os.pwrite).
#   fio: 4 KiB rand write (+ end_fsync) and 1 MiB seq read (buffered, and O_DIRECT so every
#   read reaches the daemon), time-based, on a 1 GiB file: first with no snapshot, then after
#   5 snapshots, each cut after a 4 KiB write so they differ. The first write after a snapshot
#   gives the file a data file of its own over the shared one; an untimed warm-up write,
#   whose time is shown apart, does that before the timed runs. The timed runs still copy
#   each 1 MiB chunk up the first time they change it, as an application would. Page cache
#   written back and dropped before every fio run.
# Prints a table (metric, median, unit, min, max, runs).
#
# Usage: scripts/snapbench.sh [--json FILE] [--files N] [--data SIZE] [--runtime SECONDS]
#                             [--repeat N]
#   --json     also write the medians and every run to FILE
#   --files    small (4 KiB) files in the full volume (default 100000)
#   --data     bytes of file data in the full volume, in files of at most 1 GiB (default 10g)
#   --runtime  seconds per fio run (default 10; 2 for a smoke run)
#   --repeat   runs per measurement (default 5)
# Smoke run: scripts/snapbench.sh --files 2000 --data 256m --runtime 2 --repeat 3
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

json_out=""
files=100000
data=10g
runtime=10
repeat=5
while (($#)); do
	case $1 in
	--json) json_out=$(realpath -m "${2:?}") && shift ;;
	--files) files=${2:?} && shift ;;
	--data) data=${2:?} && shift ;;
	--runtime) runtime=${2:?} && shift ;;
	--repeat) repeat=${2:?} && shift ;;
	-h | --help) vf_usage ;;
	*) vf_usage ;;
	esac
	shift
done
[[ $files =~ ^[0-9]+$ ]] || vf_die "--files must be a non-negative integer, not '$files'"
vf_require_count --runtime "$runtime"
vf_require_count --repeat "$repeat"
[[ -z ${VOLFS_TEST_DIR:-} ]] || vf_die "VOLFS_TEST_DIR is set: snapshots need a volfs mount, there is no native baseline"

vf_require_root
vf_require_volfs
vf_require fio python3 fusermount3
tool="$VF_ROOT/scripts/snapbench.py"
data_bytes=$(python3 "$tool" bytes "$data")
capacity=64Gi
capacity_bytes=$((64 << 30))
file_size=1g # the file of the first-write and fio measurements
file_bytes=$((1 << 30))
snapshots=5 # snapshots cut before the second set of fio runs
full_bytes=$((data_bytes + files * 4096))
((full_bytes + (1 << 30) <= capacity_bytes)) || vf_die "--files/--data do not fit the $capacity volume"

vf_setup full "$capacity" >&2
mnt_full=$VF_MNT
# Disk the run needs, counted generously: the full volume, the first-write file and a copy,
# the fio file and a copy per snapshot (volfs copies only the chunks that change).
need=$((full_bytes + (2 + 1 + snapshots + 1) * file_bytes))
avail=$(($(stat -f -c '%a * %S' "$VF_POOL")))
((avail > need + (1 << 30))) || vf_die "the pool's disk has $((avail >> 20)) MiB free; this run needs about $((need >> 20)) MiB"

metrics="$VF_TMP/metrics.tsv" # the rows, in order (see snapbench.py)
results="$VF_TMP/results.tsv" # KEY<TAB>VALUE, one line per run
: >"$metrics"
: >"$results"
failed=()

section() { printf 'section\t-\t-\t%s\n' "$1" >>"$metrics"; }
metric() { printf 'metric\t%s\t%s\t%s\n' "$1" "$2" "$3" >>"$metrics"; }
ratio() { printf 'ratio\t%s\tx\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$metrics"; }
record() { printf '%s\t%s\n' "$1" "$2" >>"$results"; }

# timed KEY CMD...: run CMD (its stdout dropped) and record its wall time in ms.
timed() {
	local key=$1 t0 t1 us
	shift
	t0=${EPOCHREALTIME//[.,]/}
	"$@" >/dev/null || vf_die "failed: ${*}"
	t1=${EPOCHREALTIME//[.,]/}
	us=$((t1 - t0))
	record "$key" "$(printf '%d.%03d' $((us / 1000)) $((us % 1000)))"
}

# Write back every dirty page and empty the page cache, dentry and inode caches.
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

human() { numfmt --to=iec-i --suffix=B "$1"; }

# --- the volumes --------------------------------------------------------------------------
full_desc="$files files + $(human "$data_bytes")"
vf_log "filling volume full: $full_desc (at $mnt_full)"
populate=$(python3 "$tool" populate "$mnt_full" "$files" "$data_bytes")
sync
vf_volfs volume list >&2

vf_create_volume empty "$capacity" >/dev/null
vf_mount empty "$VF_TMP/me" >/dev/null

# --- 1. commands ---------------------------------------------------------------------------
section "volfs commands: wall time of the process, start to exit"
metric noop-mounts ms "no-op: volfs mounts"
metric noop-list-empty ms "volfs snapshot list, empty volume"
metric noop-list-full ms "volfs snapshot list, $full_desc"
for op in snap clone restore del-clone del-restore del-snap; do
	case $op in
	snap) what="snapshot create" ;;
	clone) what="volume create --from-volume (clone)" ;;
	restore) what="volume create --from-snapshot (restore)" ;;
	del-clone) what="volume delete of the clone" ;;
	del-restore) what="volume delete of the restore" ;;
	del-snap) what="snapshot delete" ;;
	esac
	metric "$op-empty" ms "$what, empty volume"
	metric "$op-full" ms "$what, $full_desc"
done

vf_log "commands: $repeat runs, alternating the full and the empty volume"
for ((run = 1; run <= repeat; run++)); do
	order=(full empty)
	((run % 2)) || order=(empty full)
	for vol in "${order[@]}"; do
		timed noop-mounts vf_volfs mounts
		timed "noop-list-$vol" vf_volfs snapshot list "$vol"
		timed "snap-$vol" vf_volfs snapshot create "$vol" "s$run"
		timed "clone-$vol" vf_volfs volume create "$vol-clone$run" --from-volume "$vol"
		timed "restore-$vol" vf_volfs volume create "$vol-restore$run" --from-snapshot "$vol@s$run"
		timed "del-clone-$vol" vf_volfs volume delete "$vol-clone$run"
		timed "del-restore-$vol" vf_volfs volume delete "$vol-restore$run"
		timed "del-snap-$vol" vf_volfs snapshot delete "$vol@s$run"
	done
	printf '  run %d/%d  snapshot create: full %s ms, empty %s ms\n' "$run" "$repeat" \
		"$(awk -F'\t' '$1 == "snap-full" { v = $2 } END { print v }' "$results")" \
		"$(awk -F'\t' '$1 == "snap-empty" { v = $2 } END { print v }' "$results")" >&2
done
vf_umount "$VF_TMP/me" >/dev/null
vf_volfs volume delete empty >/dev/null

# --- 2. first write after a snapshot -------------------------------------------------------
section "4 KiB pwrite (no fsync) to a $(human $file_bytes) file, right after a new snapshot"
metric write-first ms "first write after the snapshot"
metric write-second ms "second write, another offset"
mnt_cow="$VF_TMP/mc"
vf_create_volume cow "$capacity" >/dev/null
vf_mount cow "$mnt_cow" >/dev/null
fio --name=prepare --directory="$mnt_cow" --filename=file --size="$file_size" --rw=write --bs=1m \
	--ioengine=psync --end_fsync=1 --output="$VF_TMP/fio-prepare-cow.txt" >/dev/null ||
	vf_die "could not write $mnt_cow/file: $(tail -n 5 "$VF_TMP/fio-prepare-cow.txt")"
vf_log "first write: $repeat runs, each a new snapshot then two timed 4 KiB pwrites"
for ((run = 1; run <= repeat; run++)); do
	sync
	vf_volfs snapshot create cow "w$run" >/dev/null
	first=$(((run * 4096000) % (file_bytes / 2)))
	second=$((first + file_bytes / 2))
	took=$(python3 "$tool" pwrite "$mnt_cow/file" "$first" "$second")
	read -r t_first t_second <<<"$took"
	record write-first "$t_first"
	record write-second "$t_second"
	printf '  run %d/%d  first %s ms, second %s ms\n' "$run" "$repeat" "$t_first" "$t_second" >&2
	vf_volfs snapshot delete "cow@w$run" >/dev/null
done
vf_umount "$mnt_cow" >/dev/null
vf_volfs volume delete cow >/dev/null

# --- 3. fio with and without snapshots -----------------------------------------------------
mnt_fio="$VF_TMP/mf"
vf_create_volume fio "$capacity" >/dev/null
vf_mount fio "$mnt_fio" >/dev/null
fio_args=(--directory="$mnt_fio" --filename=bench.file --size="$file_size" --ioengine=psync
	--invalidate=0 --output-format=json)
fio --name=prepare "${fio_args[@]}" --rw=write --bs=1m --end_fsync=1 \
	--output="$VF_TMP/fio-prepare.json" >/dev/null ||
	vf_die "could not write $mnt_fio/bench.file: $(tail -n 5 "$VF_TMP/fio-prepare.json")"

declare -A fio_jobs=(
	[randwrite]="--rw=randwrite --bs=4k --end_fsync=1"
	[read]="--rw=read --bs=1m --pre_read=1"
	[read-direct]="--rw=read --bs=1m --pre_read=1 --direct=1"
)
declare -A fio_labels=(
	[randwrite]="4 KiB rand write, end_fsync"
	[read]="1 MiB seq read, buffered"
	[read-direct]="1 MiB seq read, O_DIRECT"
)
declare -A fio_units=([randwrite]=IOPS [read]=MiB/s [read-direct]=MiB/s)
fio_order=(randwrite read read-direct)

section "fio on a $(human $file_bytes) file, ${runtime}s per run: no snapshot vs $snapshots snapshots"
metric warmup-0 ms "warm-up 4 KiB write, no snapshot"
metric warmup-$snapshots ms "warm-up 4 KiB write after the ${snapshots}th snapshot (untimed in fio)"
for job in "${fio_order[@]}"; do
	metric "$job-0" "${fio_units[$job]}" "${fio_labels[$job]}, no snapshot"
	metric "$job-$snapshots" "${fio_units[$job]}" "${fio_labels[$job]}, $snapshots snapshots"
	ratio "$job-ratio" "${fio_labels[$job]}: $snapshots snapshots / none" "$job-$snapshots" "$job-0"
done

# fio_runs N: the fio jobs, $repeat runs each, recorded as JOB-N.
fio_runs() {
	local n=$1 run job out value args
	for ((run = 1; run <= repeat; run++)); do
		for job in "${fio_order[@]}"; do
			out="$VF_TMP/fio-$job-$n-$run.json"
			read -r -a args <<<"${fio_jobs[$job]}"
			drop_caches
			fio --name="$job" "${fio_args[@]}" --runtime="$runtime" --time_based=1 "${args[@]}" \
				--output="$out" >/dev/null || true
			if value=$(python3 "$tool" fio "$out" "$([[ ${fio_units[$job]} == IOPS ]] && echo iops || echo mibs)"); then
				record "$job-$n" "$value"
				printf '  %-12s %d snapshots  run %d/%d  %10s %s\n' "$job" "$n" "$run" "$repeat" "$value" "${fio_units[$job]}" >&2
			else
				record "$job-$n" "error: see $out"
				failed+=("fio $job with $n snapshots (run $run)")
			fi
		done
	done
}

# warmup N: one timed 4 KiB pwrite; after a snapshot it gives the file its own data file.
warmup() {
	local t
	sync
	t=$(python3 "$tool" pwrite "$mnt_fio/bench.file" 8192)
	record "warmup-$1" "$t"
	vf_log "warm-up write with $1 snapshots: $t ms"
}

vf_log "fio: no snapshot, $repeat runs per job"
warmup 0
fio_runs 0
vf_log "cutting $snapshots snapshots of fio, each after a 4 KiB write"
for ((i = 1; i <= snapshots; i++)); do
	t=$(python3 "$tool" pwrite "$mnt_fio/bench.file" $((i * (1 << 20))))
	vf_volfs snapshot create fio "f$i" >/dev/null
	printf '  write %s ms (copies the file unless it is the first), then snapshot fio@f%d\n' "$t" "$i" >&2
done
vf_volfs snapshot list fio >&2
warmup $snapshots
vf_log "fio: $snapshots snapshots, $repeat runs per job"
fio_runs $snapshots
# Unmount now rather than on exit, so nothing prints after the table.
vf_umount "$mnt_fio" >/dev/null
vf_umount "$mnt_full" >/dev/null

# --- report --------------------------------------------------------------------------------
echo
report=(python3 "$tool" report "$metrics" "$results"
	--meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta "kernel=$(uname -r)" --meta "cpus=$(nproc)"
	--meta "volfs_version=$("$VOLFS" --version 2>/dev/null || echo unknown)"
	--meta "repeat=$repeat" --meta "runtime_s=$runtime" --meta "files=$files"
	--meta "data_bytes=$data_bytes" --meta "capacity=$capacity" --meta "file_size=$file_size"
	--meta "snapshots=$snapshots")
while IFS= read -r line; do
	report+=(--meta "$line")
done <<<"$populate"
report+=(
	--note "median of $repeat runs per row; command times include process start and the control-socket round trip: subtract the no-op row"
	--note "snapshot list is not a no-op: it reads the pool's inode records (both volumes are in one pool, so the empty volume's list pays for the full one's files too)"
	--note "first write: includes volfs making a durable data file of the file's own over the shared one and copying one 1 MiB chunk up"
	--note "fio: the warm-up write made the file's own data file first (its time is the warm-up row); the timed runs copy chunks up as they first change them"
)
if [[ -n $json_out ]]; then
	report+=(--json "$json_out")
fi
"${report[@]}"
if ((${#failed[@]})); then
	vf_die "failed: ${failed[*]}"
fi
