# shellcheck shell=bash
# Shared helpers for the scripts in scripts/. Source it, do not run it; it builds nothing.
#
#   VF_ROOT     the repository
#   VOLFS       absolute path of the release binary (target/release/volfs; VOLFS_BIN overrides)
#   vf_setup    temp pool + volume + mount, cleaned up on exit; sets VF_TMP, VF_POOL, VF_MNT
#
# Set VOLFS_TEST_DIR=/some/native/dir to run a suite against that directory instead of a
# volfs mount (a baseline: what the same suite does on the disk under the pool).
# Set VF_MOUNT_OPTS (e.g. --no-passthrough) to add options to every `volfs mount`,
# VF_CAPACITY to change the test volume's capacity (default 32Gi; empty: none, so file I/O
# is passed through to the kernel),
# VF_KEEP=1 to keep the temp dir (pool, logs) after the run.

set -euo pipefail

VF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VOLFS=${VOLFS_BIN:-$VF_ROOT/target/release/volfs}
export VF_ROOT VOLFS

if [[ -n ${HOME:-} && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
	PATH="$HOME/.cargo/bin:$PATH"
fi
export PATH

VF_TMP=""             # temp dir of this run (pool, mount point, scratch)
VF_POOL=""            # pool dir
VF_MNT=""             # mount point of the test volume
VF_DAEMON_PID=""      # pid of a `volfs serve` started with vf_start_daemon
VF_MOUNTS=()          # mount points to unmount on exit
VF_CLEANUP_HOOKS=()   # extra commands run first on exit

vf_log() { printf '==> %s\n' "$*" >&2; }
vf_warn() { printf 'warning: %s\n' "$*" >&2; }
vf_die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

vf_require() {
	local cmd
	for cmd in "$@"; do
		command -v "$cmd" >/dev/null 2>&1 || vf_die "$cmd not found; run scripts/deps.sh"
	done
}

# vf_require_count WHAT VALUE: dies unless VALUE is a positive integer; WHAT names the option.
# vf_usage: print the calling script's "# Usage:" comment block (up to its first line that is
# not a comment) and exit 2.
vf_usage() {
	sed -n '/^# Usage:/,/^[^#]/p' "${BASH_SOURCE[1]}" | sed '$d; s/^# \{0,1\}//' >&2
	exit 2
}

vf_require_count() {
	[[ $2 =~ ^[1-9][0-9]*$ ]] || vf_die "$1 must be a positive integer, not '$2'"
}

vf_require_volfs() {
	[[ -x $VOLFS ]] || vf_die "$VOLFS not found; run cargo build --release"
}

vf_require_root() {
	[[ $(id -u) -eq 0 ]] || vf_die "must run as root"
}

# volfs ARGS...: the CLI, always against this run's pool.
vf_volfs() {
	VOLFS_POOL="$VF_POOL" "$VOLFS" "$@"
}

# True if DIR is a mount point (also when its FUSE daemon is gone).
vf_is_mounted() {
	local dir
	dir=$(realpath -m "$1")
	awk -v d="$dir" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# Mount points at or below DIR, deepest first.
vf_mounts_below() {
	local dir
	dir=$(realpath -m "$1")
	awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# vf_tmp: make this run's temp dir (short path: socket paths are at most 108 bytes) and
# install the cleanup trap. Idempotent.
vf_tmp() {
	[[ -n $VF_TMP ]] && return 0
	VF_TMP=$(mktemp -d /tmp/vf.XXXX)
	chmod 0755 "$VF_TMP" # tests switch to unprivileged users inside the mount
	VF_POOL="$VF_TMP/p"
	mkdir -p "$VF_POOL"
	trap vf_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# vf_umount DIR: unmount through volfs, falling back to a lazy fusermount3.
vf_umount() {
	local mnt=$1
	vf_is_mounted "$mnt" || return 0
	if [[ -x $VOLFS ]] && timeout 60 env VOLFS_POOL="$VF_POOL" "$VOLFS" umount "$mnt" && ! vf_is_mounted "$mnt"; then
		return 0
	fi
	vf_warn "volfs umount $mnt failed; lazy unmount"
	fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	! vf_is_mounted "$mnt"
}

vf_cleanup() {
	local rc=$? hook mnt i
	trap - EXIT INT TERM
	set +e
	if ((rc != 0)); then
		local log
		for log in "$VF_POOL/daemon.log" "$VF_TMP/serve.log"; do
			[[ -n $VF_TMP && -s $log ]] || continue
			echo "--- last lines of $log:" >&2
			tail -n 20 "$log" >&2
		done
	fi
	for hook in "${VF_CLEANUP_HOOKS[@]}"; do
		eval "$hook"
	done
	for ((i = ${#VF_MOUNTS[@]} - 1; i >= 0; i--)); do
		vf_umount "${VF_MOUNTS[i]}"
	done
	if [[ -n $VF_POOL && -d $VF_POOL && -x $VOLFS ]]; then
		timeout 60 env VOLFS_POOL="$VF_POOL" "$VOLFS" shutdown >/dev/null 2>&1
	fi
	if [[ -n $VF_DAEMON_PID ]] && kill -0 "$VF_DAEMON_PID" 2>/dev/null; then
		vf_wait_exit "$VF_DAEMON_PID" 5 "volfs serve (pid $VF_DAEMON_PID) after shutdown"
	fi
	if [[ -n $VF_TMP && -d $VF_TMP ]]; then
		# Never delete through a mount that is still there.
		while read -r mnt; do
			[[ -n $mnt ]] || continue
			vf_warn "$mnt still mounted; lazy unmount"
			fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
		done < <(vf_mounts_below "$VF_TMP")
		if [[ -n $(vf_mounts_below "$VF_TMP") ]]; then
			vf_warn "leaving $VF_TMP: still mounted"
		elif [[ -n ${VF_KEEP:-} ]]; then
			vf_log "kept $VF_TMP (VF_KEEP is set)"
		else
			rm -rf "$VF_TMP"
		fi
	fi
	exit "$rc"
}

# vf_wait_exit PID SECONDS WHAT: waits up to SECONDS for PID to end; then kills it, saying
# that WHAT was still running.
vf_wait_exit() {
	local pid=$1 seconds=$2 what=$3
	for _ in $(seq $((seconds * 10))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	vf_warn "$what: still running after ${seconds}s; killing it"
	kill -9 "$pid" 2>/dev/null || true
}

# vf_report TOOL RESULTS JSON [REPORT ARGS...]: prints the table benchtool.py (TOOL) makes of
# the runs in RESULTS, with the date, kernel, cpu count and volfs version among its facts, and
# writes it as JSON to JSON too unless that is empty.
vf_report() {
	local tool=$1 results=$2 json=$3
	shift 3
	local report=(python3 "$tool" report "$results" "$@"
		--meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta "kernel=$(uname -r)" --meta "cpus=$(nproc)"
		--meta "volfs_version=$("$VOLFS" --version 2>/dev/null || echo unknown)")
	[[ -z $json ]] || report+=(--json "$json")
	"${report[@]}"
}

# vf_start_daemon [SERVE FLAGS...]: start `volfs serve` for this run's pool in the background
# and wait for it to answer. Sets VF_DAEMON_PID; its log goes to $VF_TMP/serve.log.
vf_start_daemon() {
	vf_tmp
	vf_require_volfs
	"$VOLFS" serve --pool "$VF_POOL" "$@" >>"$VF_TMP/serve.log" 2>&1 &
	VF_DAEMON_PID=$!
	local i
	for i in $(seq 100); do
		# `volfs mounts` only asks the daemon (volume commands fall back to in-process).
		if vf_volfs mounts >/dev/null 2>&1; then
			return 0
		fi
		kill -0 "$VF_DAEMON_PID" 2>/dev/null || break
		sleep 0.1
	done
	tail -n 20 "$VF_TMP/serve.log" >&2 || true
	vf_die "volfs serve did not come up (pid $VF_DAEMON_PID, try $i)"
}

# vf_create_volume NAME [CAPACITY]
vf_create_volume() {
	local name=$1 capacity=${2:-}
	if [[ -n $capacity ]]; then
		vf_volfs volume create "$name" --capacity "$capacity"
	else
		vf_volfs volume create "$name"
	fi
}

# vf_mount NAME DIR [volfs mount options...]: mount and register DIR for cleanup.
# VF_MOUNT_OPTS adds options to every mount, e.g. VF_MOUNT_OPTS=--no-passthrough.
vf_mount() {
	local name=$1 mnt=$2 extra=()
	shift 2
	read -r -a extra <<<"${VF_MOUNT_OPTS:-}"
	mkdir -p "$mnt"
	[[ " ${VF_MOUNTS[*]} " == *" $mnt "* ]] || VF_MOUNTS+=("$mnt")
	vf_volfs mount "$name" "$mnt" "${extra[@]}" "$@"
	vf_is_mounted "$mnt" || vf_die "volfs mount $name $mnt returned but $mnt is not a mount point"
}

# vf_setup [NAME] [CAPACITY]: fresh temp pool, volume NAME (default "test") and a mount of it
# at $VF_MNT. With VOLFS_TEST_DIR set, VF_MNT is a fresh directory inside it instead.
vf_setup() {
	local name=${1:-test} capacity=${2-${VF_CAPACITY-32Gi}}
	vf_require_root
	vf_tmp
	if [[ -n ${VOLFS_TEST_DIR:-} ]]; then
		mkdir -p "$VOLFS_TEST_DIR"
		VF_MNT=$(mktemp -d "$VOLFS_TEST_DIR/vf.XXXX")
		chmod 0755 "$VF_MNT"
		# shellcheck disable=SC2016 # expanded when the hook runs
		VF_CLEANUP_HOOKS+=('rm -rf "$VF_MNT"')
		vf_log "baseline run: using native directory $VF_MNT instead of a volfs mount"
		return 0
	fi
	vf_require_volfs
	vf_require fusermount3
	VF_MNT="$VF_TMP/m"
	vf_create_volume "$name" "$capacity"
	vf_mount "$name" "$VF_MNT"
	vf_log "volume $name of pool $VF_POOL mounted at $VF_MNT"
}

# vf_start_mountd: start `mountd serve` on this run's pool (a data plane is started for it),
# serving CSI on $VF_CSI_SOCKET; stopped on exit. Sets VF_MOUNTD_PID and VF_CSI_SOCKET.
VF_MOUNTD_PID=""
VF_CSI_SOCKET=""
vf_start_mountd() {
	vf_tmp
	local mountd
	mountd=$(dirname "$VOLFS")/mountd
	[[ -x $mountd ]] || vf_die "$mountd not found; run cargo build --release --workspace"
	VF_CSI_SOCKET="$VF_TMP/csi.sock"
	MOUNTD_LOG=${MOUNTD_LOG:-info} "$mountd" serve --state-dir "$VF_TMP/state" --node-id "$(hostname)" \
		--pool "$VF_POOL" --volfs-bin "$VOLFS" --csi-endpoint "unix://$VF_CSI_SOCKET" >"$VF_TMP/serve.log" 2>&1 &
	VF_MOUNTD_PID=$!
	VF_CLEANUP_HOOKS+=("kill $VF_MOUNTD_PID 2>/dev/null; wait $VF_MOUNTD_PID 2>/dev/null")
	for _ in $(seq 300); do
		[[ -S $VF_CSI_SOCKET ]] && return 0
		kill -0 "$VF_MOUNTD_PID" 2>/dev/null || vf_die "mountd exited: $(tail -n 5 "$VF_TMP/serve.log")"
		sleep 0.1
	done
	vf_die "mountd did not listen on $VF_CSI_SOCKET"
}
