#!/usr/bin/env bash
# Installs what volfs's tests and benchmarks need; safe to run again (it skips what is there).
#   Debian packages: fuse3 acl fio stress-ng sqlite3 libacl1-dev libfuse3-dev gcc make pkg-config git tar
#                    xz-utils python3,
#                    docker.io and busybox-static (the Docker plugin tests run a private dockerd),
#                    tmux and python3-prometheus-client (volfs top and the metrics endpoint tests)
#   cargo install:   pjdfstest, fsx (pinned versions, built from crates.io)
#   user `tests`:    the second unprivileged user pjdfstest switches to (nobody is the first)
# Run as root (or with sudo available) on Debian or Ubuntu.
set -euo pipefail

if [[ -n ${HOME:-} && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
	PATH="$HOME/.cargo/bin:$PATH"
fi
export PATH

PACKAGES=(fuse3 acl fio stress-ng sqlite3 libacl1-dev libfuse3-dev gcc make pkg-config git tar xz-utils python3 docker.io
	busybox-static tmux python3-prometheus-client)
PJDFSTEST_VERSION=0.2.2
FSX_VERSION=0.3.2

log() { printf '==> %s\n' "$*" >&2; }

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
	command -v sudo >/dev/null || {
		echo "error: run as root (or install sudo)" >&2
		exit 1
	}
	SUDO=(sudo)
fi

# Debian packages: only touch apt when something is missing.
missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
	log "apt-get install ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${SUDO[@]}" apt-get update
	"${SUDO[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"
else
	log "Debian packages present: ${PACKAGES[*]}"
fi

command -v cargo >/dev/null || {
	echo "error: cargo not found (install Rust with rustup; cargo goes to ~/.cargo/bin)" >&2
	exit 1
}
for component in rustfmt clippy; do
	if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
		log "rustup component add $component"
		rustup component add "$component"
	fi
done

# Third-party test suites from crates.io.
cargo_tool() {
	local crate=$1 version=$2
	if command -v "$crate" >/dev/null; then
		log "$crate present: $(command -v "$crate")"
	else
		log "cargo install $crate $version"
		cargo install --locked --version "$version" "$crate"
	fi
}
cargo_tool pjdfstest "$PJDFSTEST_VERSION"
cargo_tool fsx "$FSX_VERSION"

if ! getent passwd tests >/dev/null; then
	log "creating user tests (for pjdfstest)"
	"${SUDO[@]}" useradd --system --user-group --no-create-home --home-dir / \
		--shell /usr/sbin/nologin --comment "pjdfstest dummy user" tests
fi

[[ -c /dev/fuse ]] || log "warning: /dev/fuse is missing; FUSE mounts will fail (modprobe fuse?)"
log "dependencies ready"
