#!/usr/bin/env bash
# pjdfstest (the Rust rewrite, `cargo install pjdfstest`) as root against a fresh volfs mount.
# Configuration: scripts/pjdfstest.toml (features volfs has; nothing marked as an expected
# failure). The EXDEV tests get a native directory as the second file system. The EROFS
# tests remount the volume read-only (see the mount shim below); they run when that works
# here and are reported as skipped (with the reason printed) when it does not.
# Fails if any test fails or passes unexpectedly.
#
#   PJDFSTEST_FILTER="chmod rename"   run only tests whose names contain one of these
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vf_require pjdfstest
getent passwd tests >/dev/null || vf_die "user 'tests' is missing; run scripts/deps.sh"

vf_setup pjdfs
# A directory on another file system than the one under test, for the EXDEV tests.
if [[ -n ${VOLFS_TEST_DIR:-} ]]; then
	secondary=$(mktemp -d /dev/shm/vf.XXXX)
	# shellcheck disable=SC2016 # expanded when the hook runs
	VF_CLEANUP_HOOKS+=('rm -rf "$secondary"')
else
	secondary="$VF_TMP/secondary"
	mkdir -p "$secondary"
fi
chmod 0755 "$secondary"

config="$VF_TMP/pjdfstest.toml"
cp "$VF_ROOT/scripts/pjdfstest.toml" "$config"

# The EROFS tests remount the mount point read-only and back. They run in a second pjdfstest
# process of their own: in a full run, earlier tests leave files open for writing, so the
# remount fails with EBUSY on any file system (tmpfs too).
# pjdfstest remounts with `mount -o remount,ro MOUNTPOINT`. For a FUSE mount, mount(8) hands
# that to the mount.fuse helper, which cannot remount; `mount -i` (no helper) makes it a plain
# mount(2) remount, which the kernel does itself. A `mount` shim first in pjdfstest's PATH adds -i.
shim="$VF_TMP/bin"
mkdir -p "$shim"
printf '#!/bin/sh\nexec %s -i "$@"\n' "$(command -v mount)" >"$shim/mount"
chmod 0755 "$shim/mount"
erofs_config=""
if [[ -z ${VOLFS_TEST_DIR:-} ]]; then
	if err=$("$shim/mount" -o remount,ro "$VF_MNT" 2>&1) && ! touch "$VF_MNT/.ro-probe" 2>/dev/null &&
		err=$("$shim/mount" -o remount,rw "$VF_MNT" 2>&1) && touch "$VF_MNT/.ro-probe" && rm "$VF_MNT/.ro-probe"; then
		erofs_config="$VF_TMP/pjdfstest-erofs.toml"
		sed 's/^allow_remount = false$/allow_remount = true/' "$config" >"$erofs_config"
	else
		"$shim/mount" -o remount,rw "$VF_MNT" 2>/dev/null || true
		rm -f "$VF_MNT/.ro-probe"
		vf_warn "read-only remount of $VF_MNT does not work, EROFS tests will be skipped: ${err:-file created while read-only}"
	fi
fi

summaries=()
# pjdfs NAME CONFIG [PATTERN...]: one pjdfstest run; prints what did not pass and its summary.
pjdfs() {
	local name=$1 conf=$2 rc=0 summary
	shift 2
	local log="$VF_TMP/pjdfstest-$name.log"
	vf_log "pjdfstest ($name): pjdfstest -c $conf -p $VF_MNT -s $secondary $*"
	(cd "$VF_MNT" && PATH="$shim:$PATH" NO_COLOR=1 pjdfstest -c "$conf" -p "$VF_MNT" -s "$secondary" "$@") >"$log" 2>&1 || rc=$?
	echo "--- $name: failed or unexpectedly passed:"
	awk '/ (FAILED|PASSED UNEXPECTEDLY)$/ { print; getline; print }' "$log"
	echo "--- $name: skipped:"
	awk '/ skipped$/ { name = $1; getline; print "  " name ": " $0 }' "$log" | sed 's/\t//' |
		if [[ $name == all && -n $erofs_config ]]; then
			grep -v 'allow_remount' || true
			echo "  (the EROFS tests, skipped here, ran separately above)"
		else
			cat
		fi
	summary=$(grep -E '^Summary: ' "$log" || true)
	if [[ -z $summary ]]; then
		tail -n 40 "$log"
		summary="did not finish (exit $rc)"
		rc=1
	fi
	summaries+=("$name: $summary")
	return "$rc"
}

read -r -a filter <<<"${PJDFSTEST_FILTER:-}"
rc=0
# EROFS tests first, on the fresh mount: leftovers of failed tests in the main run (an
# unlinked file still open or executing) would make the read-only remount fail with EBUSY.
if [[ -n $erofs_config ]]; then
	erofs=()
	for f in "${filter[@]}"; do
		[[ $f == *erofs* ]] && erofs+=("$f")
	done
	((${#filter[@]})) || erofs=(erofs)
	if ((${#erofs[@]})); then
		pjdfs erofs "$erofs_config" "${erofs[@]}" || rc=1
	fi
fi
pjdfs all "$config" "${filter[@]}" || rc=1

echo "---"
printf 'pjdfstest %s\n' "${summaries[@]}"
((rc == 0)) || vf_die "pjdfstest: unexpected failures"
echo "pjdfstest: no unexpected failures"
