#!/usr/bin/env bash
# pjdfstest (the Rust rewrite, `cargo install pjdfstest`) as root against a fresh volfs mount.
# Configuration: scripts/pjdfstest.toml (features volfs has; nothing marked as an expected
# failure). The EXDEV tests get a native directory as the second file system. The EROFS
# tests remount the volume read-only with mount(8); they run when that works here and are
# reported as skipped (with the reason printed) when it does not.
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
if [[ -z ${VOLFS_TEST_DIR:-} ]]; then
	if err=$(mount -o remount,ro "$VF_MNT" 2>&1) && err=$(mount -o remount,rw "$VF_MNT" 2>&1) &&
		touch "$VF_MNT/.rw-probe" && rm "$VF_MNT/.rw-probe"; then
		sed -i 's/^allow_remount = false$/allow_remount = true/' "$config"
		vf_log "read-only remount works: EROFS tests enabled"
	else
		mount -o remount,rw "$VF_MNT" 2>/dev/null || true
		vf_warn "mount -o remount,ro $VF_MNT failed, EROFS tests will be skipped: $err"
	fi
fi

read -r -a filter <<<"${PJDFSTEST_FILTER:-}"
log="$VF_TMP/pjdfstest.log"
vf_log "pjdfstest -c $config -p $VF_MNT -s $secondary ${filter[*]}"
rc=0
(cd "$VF_MNT" && NO_COLOR=1 pjdfstest -c "$config" -p "$VF_MNT" -s "$secondary" "${filter[@]}") >"$log" 2>&1 || rc=$?

# Full list of what did not pass, then the summary.
echo "--- failed or unexpectedly passed:"
awk '/ (FAILED|PASSED UNEXPECTEDLY)$/ { print; getline; print }' "$log"
echo "--- skipped:"
awk '/ skipped$/ { name = $1; getline; print "  " name ": " $0 }' "$log" | sed 's/\t//'
summary=$(grep -E '^Summary: ' "$log" || true)
echo "---"
if [[ -z $summary ]]; then
	tail -n 40 "$log"
	vf_die "pjdfstest did not finish (exit $rc)"
fi
echo "pjdfstest: $summary"
if ((rc != 0)); then
	vf_die "pjdfstest: unexpected failures (exit $rc)"
fi
