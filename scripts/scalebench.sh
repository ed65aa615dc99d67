#!/usr/bin/env bash
# How one daemon carries many mounts: mounts subPath views of one volume in steps (10, 100,
# 1000 by default) and prints, at each step, the time per mount, the daemon's threads and
# resident memory (from /proc), then the same after unmounting them all (time per unmount,
# memory back to where it started?). Then the latency of a request on one idle mount while
# up to 100 others run fio (4 KiB random writes with an fsync every 32 on a volume with a
# capacity, so the daemon serves them): a lookup of a name never seen (a LOOKUP the kernel
# cannot answer from its cache) and a statfs, p50/p95/p99, idle and under load. A step that
# would need more memory than the machine has available is skipped and reported as such.
#
# Usage: scripts/scalebench.sh [--steps "10 100 1000"] [--busy N] [--runtime SECONDS]
#                              [--probes N] [--json FILE]
#   --steps    how many views to have mounted at each step (default "10 100 1000")
#   --busy     views running fio during the latency probe (default 100, at most the last step)
#   --runtime  seconds of fio load (default 20)
#   --probes   lookups and statfs calls per measurement (default 2000)
#   --json     also write the figures to FILE
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

steps="10 100 1000"
busy=100
runtime=20
probes=2000
json_out=""
while (($#)); do
	case $1 in
	--steps) steps=$2 && shift 2 ;;
	--busy) busy=$2 && shift 2 ;;
	--runtime) runtime=$2 && shift 2 ;;
	--probes) probes=$2 && shift 2 ;;
	--json) json_out=$2 && shift 2 ;;
	-h | --help) vf_usage ;;
	*) vf_die "unknown argument $1 (try --help)" ;;
	esac
done

vf_require_root
vf_require fio python3
read -r -a step_list <<<"$steps"
most=${step_list[-1]}

# shellcheck disable=SC2119 # the daemon takes no flags here
vf_start_daemon
vf_create_volume scale 64Gi >/dev/null
vf_mount scale "$VF_TMP/full"
vf_log "making $most directories"
for ((i = 0; i < most; i++)); do
	mkdir "$VF_TMP/full/d$i"
done
touch "$VF_TMP/full/d0/probe"
vf_umount "$VF_TMP/full"
mkdir -p "$VF_TMP/v"

# proc_figures: "THREADS RSS_KIB" of the daemon.
proc_figures() {
	awk '/^Threads:/ {t = $2} /^VmRSS:/ {r = $2} END {print t, r}' "/proc/$VF_DAEMON_PID/status"
}

now_ms() { date +%s%3N; }

rows=()
read -r threads0 rss0 < <(proc_figures)
rows+=("0 - $threads0 $rss0")
mounted=0
for target in "${step_list[@]}"; do
	# A step that would take more memory than the machine has is skipped, and says so.
	if ((mounted > 0)); then
		read -r _ rss < <(proc_figures)
		available=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
		need=$(((rss - rss0) * (target - mounted) / mounted))
		if ((need > available - (2 << 20))); then
			vf_warn "skipping $target views: at $(((rss - rss0) / mounted / 1024)) MiB per view they need $((need >> 20)) GiB more; $((available >> 20)) GiB is available"
			rows+=("$target skipped - $(((rss0 + (rss - rss0) * target / mounted) >> 10))")
			continue
		fi
	fi
	start=$(now_ms)
	for ((i = mounted; i < target; i++)); do
		mkdir -p "$VF_TMP/v/$i"
		VF_MOUNTS+=("$VF_TMP/v/$i")
		vf_volfs mount scale "$VF_TMP/v/$i" --subpath "d$i" >/dev/null
	done
	elapsed=$(($(now_ms) - start))
	per=$(python3 -c "print(f'{$elapsed / ($target - $mounted):.1f}')")
	mounted=$target
	read -r threads rss < <(proc_figures)
	rows+=("$target $per $threads $rss")
	vf_log "$target views: $per ms per mount, $threads threads, $((rss / 1024)) MiB resident"
done

# probe DIR: "P50 P95 P99" in µs of LOOKUPs of new names, then of statfs, in DIR.
probe() {
	python3 - "$1" "$probes" <<'EOF'
import os, sys, time, uuid
d, n = sys.argv[1], int(sys.argv[2])
def pct(xs):
    xs = sorted(xs)
    return [xs[min(len(xs) - 1, int(len(xs) * q))] for q in (0.50, 0.95, 0.99)]
lookups, statfs = [], []
tag = uuid.uuid4().hex[:8]
for i in range(n):
    t = time.perf_counter_ns()
    try:
        os.stat(f"{d}/absent-{tag}-{i}")
    except FileNotFoundError:
        pass
    lookups.append((time.perf_counter_ns() - t) / 1000)
    t = time.perf_counter_ns()
    os.statvfs(d)
    statfs.append((time.perf_counter_ns() - t) / 1000)
print(" ".join(f"{v:.0f}" for v in pct(lookups) + pct(statfs)))
EOF
}

probe_dir="$VF_TMP/v/0"
read -r -a idle < <(probe "$probe_dir")
vf_log "idle: lookup p50/p95/p99 ${idle[0]}/${idle[1]}/${idle[2]} µs, statfs ${idle[3]}/${idle[4]}/${idle[5]} µs"

# The busy views are the last ones mounted; the probed one (view 0) stays idle.
((busy < mounted)) || busy=$((mounted - 1))
jobfile="$VF_TMP/busy.fio"
{
	printf '[global]\nrw=randwrite\nbs=4k\nsize=16m\nfsync=32\nioengine=psync\ntime_based=1\nruntime=%s\n' "$runtime"
	for ((i = 1; i <= busy; i++)); do
		printf '[v%d]\ndirectory=%s\n' "$i" "$VF_TMP/v/$((mounted - i))"
	done
} >"$jobfile"
fio --output="$VF_TMP/fio.out" "$jobfile" &
fio_pid=$!
# fio lays its files out before it starts writing: probe once every job's file is whole.
for _ in $(seq 600); do
	whole=$(find "$VF_TMP/v" -maxdepth 2 -name 'v*.0.0' -size 16M 2>/dev/null | wc -l)
	((whole < busy)) || break
	sleep 0.1
done
sleep 2
read -r -a loaded < <(probe "$probe_dir")
wait "$fio_pid"
vf_log "with $busy views under fio: lookup ${loaded[0]}/${loaded[1]}/${loaded[2]} µs, statfs ${loaded[3]}/${loaded[4]}/${loaded[5]} µs"

start=$(now_ms)
for ((i = 0; i < mounted; i++)); do
	vf_volfs umount "$VF_TMP/v/$i" >/dev/null
done
elapsed=$(($(now_ms) - start))
per_umount=$(python3 -c "print(f'{$elapsed / $mounted:.1f}')")
sleep 1
read -r threads_after rss_after < <(proc_figures)

echo
printf '%-8s %12s %8s %14s %16s\n' VIEWS "MS/MOUNT" THREADS "RESIDENT MiB" "MiB PER VIEW"
for row in "${rows[@]}"; do
	read -r n per threads rss <<<"$row"
	each="-"
	if [[ $per == skipped ]]; then
		rss="(would be $rss)"
	else
		((n > 0)) && each=$(python3 -c "print(f'{($rss - $rss0) / 1024 / $n:.2f}')")
		rss=$((rss / 1024))
	fi
	printf '%-8s %12s %8s %14s %16s\n' "$n" "$per" "$threads" "$rss" "$each"
done
printf '%-8s %12s %8s %14s %16s\n' "0 (after)" "$per_umount/umount" "$threads_after" "$((rss_after / 1024))" "-"
echo
printf '%-28s %8s %8s %8s\n' "latency (µs) on an idle view" p50 p95 p99
printf '%-28s %8s %8s %8s\n' "lookup, idle" "${idle[0]}" "${idle[1]}" "${idle[2]}"
printf '%-28s %8s %8s %8s\n' "lookup, $busy views busy" "${loaded[0]}" "${loaded[1]}" "${loaded[2]}"
printf '%-28s %8s %8s %8s\n' "statfs, idle" "${idle[3]}" "${idle[4]}" "${idle[5]}"
printf '%-28s %8s %8s %8s\n' "statfs, $busy views busy" "${loaded[3]}" "${loaded[4]}" "${loaded[5]}"

if [[ -n $json_out ]]; then
	python3 - "$json_out" "$rss0" "$threads_after" "$rss_after" "$per_umount" "${idle[*]}" "${loaded[*]}" "${rows[@]}" <<'EOF'
import json, sys
out, rss0, threads_after, rss_after, per_umount, idle, loaded, *rows = sys.argv[1:]
steps = []
for r in rows:
    n, per, threads, rss = r.split()
    if per == "skipped":
        steps.append({"views": int(n), "skipped": True, "rss_mib_needed": int(rss)})
        continue
    steps.append({"views": int(n), "ms_per_mount": None if per == "-" else float(per),
                  "threads": int(threads), "rss_kib": int(rss)})
keys = ["p50", "p95", "p99"]
lat = lambda xs: {"lookup": dict(zip(keys, map(float, xs[:3]))), "statfs": dict(zip(keys, map(float, xs[3:])))}
json.dump({"steps": steps, "after_unmount": {"threads": int(threads_after), "rss_kib": int(rss_after),
           "ms_per_unmount": float(per_umount)}, "idle": lat(idle.split()), "busy": lat(loaded.split())},
          open(out, "w"), indent=2)
EOF
fi
