#!/usr/bin/env bash
# Runs csi-sanity, the CSI conformance suite, against `mountd serve` (real FUSE mounts underneath)
# with every capability mountd advertises; fails unless it reports 0 failed specs.
#
#   CSI_SANITY=path     the csi-sanity binary (default: ../shared/tools/csi-sanity)
#   extra arguments are passed to csi-sanity (e.g. --ginkgo.focus=Node)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vf_require_root
vf_require_volfs
CSI_SANITY=${CSI_SANITY:-$VF_ROOT/../shared/tools/csi-sanity}
[[ -f $CSI_SANITY ]] || vf_die "csi-sanity not found at $CSI_SANITY (set CSI_SANITY)"
vf_start_mountd
if [[ ! -x $CSI_SANITY ]]; then
	# A read-only copy without its execute bit still runs from a copy of our own.
	cp "$CSI_SANITY" "$VF_TMP/csi-sanity"
	chmod 0700 "$VF_TMP/csi-sanity"
	CSI_SANITY=$VF_TMP/csi-sanity
fi
vf_log "csi-sanity against mountd (pid $VF_MOUNTD_PID)"
out="$VF_TMP/sanity.out"
rc=0
"$CSI_SANITY" --csi.endpoint "unix://$VF_CSI_SOCKET" --csi.mountdir "$VF_TMP/mount" \
	--csi.stagingdir "$VF_TMP/staging" --csi.testvolumesize 16777216 \
	--csi.testvolumeexpandsize 33554432 --ginkgo.no-color "$@" 2>&1 | tee "$out" || rc=$?
summary=$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$out" | tail -n 1 || true)
[[ -n $summary ]] || vf_die "csi-sanity printed no summary (exit $rc)"
failed=$(sed -E 's/.* ([0-9]+) Failed.*/\1/' <<<"$summary")
vf_log "csi-sanity: $summary"
((rc == 0 && failed == 0)) || vf_die "csi-sanity: $failed failed (exit $rc); mountd log: $VF_TMP/serve.log"
