#!/usr/bin/env bash
# Try volfs: install what it needs, build it, and mount a volume named `demo` at ./mnt,
# served from a pool in ./pool (both in the repository's top directory). Run it again
# at any time: it reuses the pool, the volume and an existing mount.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$VF_ROOT"
vf_require_root

"$VF_ROOT/scripts/deps.sh"
vf_log "cargo build --release --workspace"
cargo build --release --workspace

export VOLFS_POOL="$VF_ROOT/pool"
VF_POOL=$VOLFS_POOL
mnt="$VF_ROOT/mnt"
mkdir -p "$VOLFS_POOL" "$mnt"

if vf_is_mounted "$mnt" && ! stat "$mnt/." >/dev/null 2>&1; then
	vf_warn "$mnt is mounted but does not answer (its daemon is gone); unmounting it"
	fusermount3 -u -z "$mnt"
fi

if vf_is_mounted "$mnt"; then
	vf_log "$mnt is already mounted"
else
	if "$VOLFS" volume inspect demo >/dev/null 2>&1; then
		vf_log "volume demo exists"
	else
		vf_log "volfs volume create demo --capacity 10Gi"
		"$VOLFS" volume create demo --capacity 10Gi
	fi
	vf_log "volfs mount demo ./mnt"
	"$VOLFS" mount demo "$mnt"
	vf_is_mounted "$mnt" || vf_die "volfs mount returned but $mnt is not mounted"
fi

echo
"$VOLFS" volume list
cat <<EOF

volfs is serving volume "demo" from ./pool, mounted at ./mnt. Try:

  cp -r /etc/apt ./mnt/ && ls -l ./mnt            write files into the volume
  export VOLFS_POOL=\$PWD/pool                     so the commands below find the pool
  target/release/volfs volume inspect demo        size, capacity, usage
  target/release/volfs umount ./mnt               unmount (files stay in ./pool)
  target/release/volfs shutdown                   stop the daemon
  scripts/run.sh                                  mount it again

Every volfs command takes --pool DIR or reads VOLFS_POOL. The control plane (CSI driver and
Docker volume plugin) is target/release/mountd: see "The control plane: mountd" in README.md.
EOF
