#!/usr/bin/env bash
# What metrics cost: the same workload on a volume whose file I/O the daemon serves (every 4 KiB
# write is a FUSE request the daemon counts and times), against a daemon started without
# --metrics-addr ("off") and one started with it while a scraper reads /metrics every second
# ("on"). The daemon is started afresh for every run; the side that goes first alternates.
#   fio: 4 KiB random writes + end_fsync (psync, one job) for --runtime seconds
#   metadata (scripts/benchtool.py meta): create, stat and unlink --files small files
# Prints the table (medians, ratio = on / off), then the size and time of one scrape.
#
# Usage: scripts/metricsbench.sh [--repeat N] [--runtime SECONDS] [--files N] [--capacity SIZE]
#   --repeat   runs per side (default 3)
#   --runtime  seconds per fio run (default 10)
#   --files    files in the metadata run (default 5000)
#   --capacity the volume's capacity (default 8Gi): the daemon serves its file I/O
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repeat=3
runtime=10
files=5000
capacity=8Gi
while (($#)); do
	case $1 in
	--repeat) repeat=${2:?} && shift ;;
	--runtime) runtime=${2:?} && shift ;;
	--files) files=${2:?} && shift ;;
	--capacity) capacity=${2:?} && shift ;;
	*) vf_usage ;;
	esac
	shift
done
vf_require_count --repeat "$repeat"
vf_require_count --runtime "$runtime"
vf_require_count --files "$files"
vf_require_root
vf_require_volfs
vf_require fio python3
tool="$VF_ROOT/scripts/benchtool.py"
vf_tmp
results="$VF_TMP/results"
mkdir -p "$results/off" "$results/on"
mnt="$VF_TMP/m"
vf_create_volume bench "$capacity"
scraper=""
# shellcheck disable=SC2016 # expanded when the hook runs
VF_CLEANUP_HOOKS+=('[[ -z $scraper ]] || kill "$scraper" 2>/dev/null')

# The address a daemon started with --metrics-addr 127.0.0.1:0 bound, from its log.
metrics_address() {
	sed -n 's|.*metrics at http://\([^/]*\)/metrics.*|\1|p' "$VF_TMP/serve.log" | tail -n 1
}

# One scraper: GET /metrics every second until killed (exec: the pid is python's).
scrape_every_second() {
	exec python3 -c 'import sys, time, urllib.request
while True:
    urllib.request.urlopen(sys.argv[1]).read()
    time.sleep(1)' "http://$1/metrics"
}

stop_daemon() {
	vf_umount "$mnt"
	vf_volfs shutdown >/dev/null
	wait "$VF_DAEMON_PID" 2>/dev/null || true
}

# run SIDE N: one run of every test against a fresh daemon.
run() {
	local side=$1 n=$2
	: >"$VF_TMP/serve.log"
	if [[ $side == on ]]; then
		vf_start_daemon --metrics-addr 127.0.0.1:0
		scrape_every_second "$(metrics_address)" &
		scraper=$!
	else
		vf_start_daemon
	fi
	vf_mount bench "$mnt"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	fio --name=rand-write-fsync --directory="$mnt" --filename=bench.file --size=256m --bs=4k \
		--rw=randwrite --ioengine=psync --runtime="$runtime" --time_based --end_fsync=1 \
		--output-format=json --output="$VF_TMP/fio.json" >/dev/null
	printf '  %-17s run %d/%d  %-4s' rand-write-fsync "$n" "$repeat" "$side"
	python3 "$tool" fio rand-write-fsync "$VF_TMP/fio.json" "$results/$side/rand-write-fsync.$n.json"
	rm -f "$mnt/bench.file"
	sync
	echo 3 >/proc/sys/vm/drop_caches
	printf '  %-17s run %d/%d  %-4s' metadata "$n" "$repeat" "$side"
	python3 "$tool" meta "$mnt/meta" "$files" "$results/$side" "$n"
	rm -rf "$mnt/meta"
	if [[ $side == on ]]; then
		# One timed scrape: the body to a file, the milliseconds it took to stdout.
		scrape_ms=$(python3 -c 'import sys, time, urllib.request
start = time.perf_counter()
body = urllib.request.urlopen(sys.argv[1]).read()
took = time.perf_counter() - start
open(sys.argv[2], "wb").write(body)
print("%.1f" % (took * 1000))' "http://$(metrics_address)/metrics" "$VF_TMP/scrape.txt")
		kill "$scraper" 2>/dev/null || true
		wait "$scraper" 2>/dev/null || true
		scraper=""
	fi
	stop_daemon
}

vf_log "4 KiB rand write + end_fsync for ${runtime}s and metadata on $files files, capacity $capacity, $repeat runs per side"
for ((n = 1; n <= repeat; n++)); do
	order=(off on)
	((n % 2)) || order=(on off)
	for side in "${order[@]}"; do
		run "$side" "$n"
	done
done
echo
python3 "$tool" report "$results" --sides off,on
echo "one scrape: $(wc -c <"$VF_TMP/scrape.txt") bytes, $(grep -vc '^#' "$VF_TMP/scrape.txt") samples, ${scrape_ms} ms"
