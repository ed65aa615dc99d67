#!/usr/bin/env bash
# fio write-then-verify (crc32c in every block) in a fresh volfs mount: sequential and
# random writes, buffered and O_DIRECT (scripts/fio/verify.fio). Every job reads its file
# back right after writing it; then the page cache is dropped and everything is verified
# again from disk with `fio --verify_only`.
#
#   VERIFY_SIZE=256m   bytes written (and verified) by each of the 5 jobs
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vf_require fio
export VERIFY_SIZE=${VERIFY_SIZE:-256m}
jobfile="$VF_ROOT/scripts/fio/verify.fio"

vf_setup verify
export VERIFY_DIR="$VF_MNT/fio"
mkdir -p "$VERIFY_DIR"

vf_log "fio: write then verify, $VERIFY_SIZE per job"
fio --output="$VF_TMP/write.log" "$jobfile" || {
	cat "$VF_TMP/write.log"
	vf_die "fio write+verify failed"
}
grep -E '^[a-z-]+: \(groupid|Run status group|WRITE:|READ:' "$VF_TMP/write.log"

vf_log "dropping caches, verifying again from disk"
sync
echo 3 >/proc/sys/vm/drop_caches
fio --verify_only --output="$VF_TMP/verify.log" "$jobfile" || {
	cat "$VF_TMP/verify.log"
	vf_die "fio verify_only after dropping caches failed"
}
grep -E '^[a-z-]+: \(groupid|Run status group|READ:' "$VF_TMP/verify.log"
rm -rf "$VERIFY_DIR"

echo
echo "fio-verify: 5 jobs x $VERIFY_SIZE written and verified twice (cached, then cold): OK"
