#!/usr/bin/env bash
# Run pensieve on the bundled example: a real Docker 20.10 data root captured from a "breached"
# host (tests/fixtures/docker/overlay2-root.tar.gz; see tests/fixtures/docker/README.md).
# Unpacking keeps overlay whiteouts (char 0/0 devices) and trusted.overlay.* xattrs, which
# needs root; as another user the diff cannot see deletions.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/pensieve-demo.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/docker"
mkdir -p "$root"
if [ "$(id -u)" != 0 ]; then
  echo "note: not root: whiteouts and opaque-directory xattrs cannot be restored; deletions will not show" >&2
fi
tar --xattrs --xattrs-include='*' --numeric-owner -xzf "$here/tests/fixtures/docker/overlay2-root.tar.gz" -C "$root" 2>/dev/null || true

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step pensieve roots "$root"
step pensieve containers "$root"
step pensieve images "$root"
step pensieve history "$root" pensieve/app:2
step pensieve diff "$root" c-modified
step pensieve fs "$root" c-modified ls -l /root
implant=$(pensieve fs "$root" c-modified stat /root/implant.sh --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_path"])')
step pensieve whence "$root" "$implant"
step pensieve logs "$root" c-running
# the whole host into one case, then the findings and the dropped files by SQL
step pensieve triage "$root" --case "$work/case.duckdb" || [ $? = 5 ]
step pensieve query "$work/case.duckdb" "SELECT severity, title, techniques FROM findings ORDER BY severity, title"
step pensieve query "$work/case.duckdb" "SELECT c.name, ch.path, ch.file_kind, ch.sha256 FROM changes ch JOIN containers c USING (container_id) WHERE ch.change = 'added' AND ch.type = 'file'"
