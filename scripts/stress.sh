#!/usr/bin/env bash
# stress-ng file-system stressors inside a fresh volfs mount, one stressor at a time, each
# bounded in time, with --verify (for the stressors that support it).
# Fails if any stressor fails, cannot start, or is skipped.
#
#   STRESS_TIMEOUT=10   seconds per stressor (13 stressors: about 2.5 minutes in all)
#   STRESS_ONLY="dir rename"   run only these stressors
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vf_require stress-ng
timeout_s=${STRESS_TIMEOUT:-10}
instances=$(nproc)

# stressor and its options; files stay small enough for the volume's capacity.
declare -A opts=(
	[dir]="--dir-dirs 2048"
	[dentry]="--dentries 2048"
	[hdd]="--hdd-bytes 128m --hdd-write-size 64k"
	[link]=""
	[symlink]=""
	[rename]=""
	[fallocate]="--fallocate-bytes 256m"
	[seek]="--seek-size 256m --seek-punch"
	[lockf]=""
	[xattr]=""
	[sync-file]="--sync-file-bytes 128m"
	[mmap]="--mmap-file --mmap-bytes 128m"
	[filename]=""
)
order=(dir dentry hdd link symlink rename fallocate seek lockf xattr sync-file mmap filename)
if [[ -n ${STRESS_ONLY:-} ]]; then
	read -r -a order <<<"$STRESS_ONLY"
fi

vf_setup stress
work="$VF_MNT/stress"
mkdir -p "$work"

# Lines that mean trouble even when stress-ng exits 0.
bad='unsuccessful run|: fail: |skipped: [1-9]|failed: [1-9]|skipping'
failed=()
for s in "${order[@]}"; do
	[[ -v "opts[$s]" ]] || vf_die "unknown stressor $s (known: ${!opts[*]})"
	vf_log "stress-ng --$s $instances --timeout ${timeout_s}s"
	log="$VF_TMP/stress-$s.log"
	read -r -a extra <<<"${opts[$s]}"
	rc=0
	(cd "$work" && stress-ng --"$s" "$instances" "${extra[@]}" --timeout "${timeout_s}s" \
		--temp-path "$work" --verify --metrics-brief) 2>&1 | tee "$log" || rc=$?
	if ((rc != 0)); then
		failed+=("$s (exit $rc)")
	elif grep -Eq "$bad" "$log"; then
		failed+=("$s ($(grep -Eo "$bad" "$log" | sort -u | tr '\n' ' '))")
	fi
	rm -rf "${work:?}"/*
done

echo
if ((${#failed[@]})); then
	echo "stress-ng: ${#failed[@]} of ${#order[@]} stressors failed: ${failed[*]}"
	exit 1
fi
echo "stress-ng: all ${#order[@]} stressors passed (${timeout_s}s each, $instances instances)"
