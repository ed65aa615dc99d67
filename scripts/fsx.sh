#!/usr/bin/env bash
# fsx (the Rust File System eXerciser, `cargo install fsx`) on a file in a fresh volfs mount:
# one run with mmap reads and writes (scripts/fsx/mmap.toml) and one without
# (scripts/fsx/nommap.toml: mapread = mapwrite = invalidate = 0). Every read is checked
# against fsx's model of the file; fsx exits non-zero at the first mismatch. On a volume with
# a capacity, a third run (mmap) cuts a snapshot of the volume every 0.2 s meanwhile and
# deletes all but the last two, so the file keeps becoming a stack of shared data files
# (chunks copied up as they change, layers merged and unseen chunks freed) under fsx's
# checks; the pool must pass fsck afterwards. (A volume without a capacity refuses snapshots
# while the kernel writes its files directly, so that run needs one.)
#
#   FSX_OPS=20000   operations per run
#   FSX_SEED=...    RNG seed (default: a fixed one per run, so failures reproduce)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vf_require fsx
ops=${FSX_OPS:-20000}

vf_setup fsx
artifacts="$VF_TMP/fsx-artifacts"
mkdir -p "$artifacts"

modes=(mmap nommap)
[[ -n ${VF_CAPACITY-32Gi} ]] && modes+=(snapshots)

# Cuts snapshots of the fsx volume until killed, keeping the last two; counts the cuts in
# $VF_TMP/cuts.
cut_snapshots() {
	local n=0
	while :; do
		n=$((n + 1))
		vf_volfs snapshot create fsx "s$n" >/dev/null || vf_die "snapshot s$n failed"
		if ((n > 2)); then
			vf_volfs snapshot delete "fsx@s$((n - 2))" >/dev/null || vf_die "deleting snapshot s$((n - 2)) failed"
		fi
		echo "$n" >"$VF_TMP/cuts"
		sleep 0.2
	done
}

run=0
for mode in "${modes[@]}"; do
	run=$((run + 1))
	seed=${FSX_SEED:-$((1000 + run))}
	conf="$VF_ROOT/scripts/fsx/${mode/snapshots/mmap}.toml"
	file="$VF_MNT/fsx-$mode"
	vf_log "fsx $mode: $ops ops, seed $seed, config $conf"
	start=$SECONDS
	cutter=""
	if [[ $mode == snapshots ]]; then
		cut_snapshots &
		cutter=$!
	fi
	ok=1
	fsx -N "$ops" -S "$seed" -f "$conf" -P "$artifacts" "$file" >"$VF_TMP/fsx-$mode.log" 2>&1 || ok=0
	if [[ -n $cutter ]]; then
		kill "$cutter"
		wait "$cutter" 2>/dev/null || true
		cuts=$(cat "$VF_TMP/cuts" 2>/dev/null || echo 0)
		((cuts >= 3)) || vf_die "only $cuts snapshots were cut during fsx"
		echo "$cuts snapshots cut (and all but the last two deleted) during fsx"
		vf_volfs fsck || vf_die "fsck failed after fsx with snapshots"
	fi
	if ((!ok)); then
		# The mismatch report comes first, then fsx's dump of its recent operations.
		head -n 60 "$VF_TMP/fsx-$mode.log"
		echo "[...]"
		tail -n 40 "$VF_TMP/fsx-$mode.log"
		vf_die "fsx $mode failed (seed $seed); reproduce: fsx -N $ops -S $seed -f $conf FILE"
	fi
	tail -n 1 "$VF_TMP/fsx-$mode.log"
	echo "fsx $mode: $ops operations OK in $((SECONDS - start))s"
done
echo
echo "fsx: ${#modes[@]} runs x $ops operations (${modes[*]}): OK"
