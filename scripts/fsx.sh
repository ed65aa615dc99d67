#!/usr/bin/env bash
# fsx (the Rust File System eXerciser, `cargo install fsx`) on a file in a fresh volfs mount:
# one run with mmap reads and writes (scripts/fsx/mmap.toml) and one without
# (scripts/fsx/nommap.toml: mapread = mapwrite = invalidate = 0). Every read is checked
# against fsx's model of the file; fsx exits non-zero at the first mismatch.
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

run=0
for mode in mmap nommap; do
	run=$((run + 1))
	seed=${FSX_SEED:-$((1000 + run))}
	conf="$VF_ROOT/scripts/fsx/$mode.toml"
	file="$VF_MNT/fsx-$mode"
	vf_log "fsx $mode: $ops ops, seed $seed, config $conf"
	start=$SECONDS
	if ! fsx -N "$ops" -S "$seed" -f "$conf" -P "$artifacts" "$file" >"$VF_TMP/fsx-$mode.log" 2>&1; then
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
echo "fsx: 2 runs x $ops operations (mmap, no mmap): OK"
