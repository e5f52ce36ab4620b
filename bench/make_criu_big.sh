#!/usr/bin/env bash
# make_criu_big.sh -- a big real CRIU checkpoint for bench_mem.py (not committed: ~400 MiB).
#
# Usage: sudo bench/make_criu_big.sh OUTDIR [NPROC] [HOG_MIB] [MARK_KIB] [MARKS]
#   (defaults: /tmp/pensieve-bench-cache/criu-big, 400 processes, 4 x 80 MiB of hog memory, a
#   marker every 64 KiB, no limit on markers per hog; the 1 GiB / 1,000-marker checkpoint of
#   bench_mem.py: OUTDIR 400 256 1024 250)
# Needs the CRIU 4.2 environment of fixtures/capture/criu_env.sh (CRIU_ENV), busybox-static and
# python3.  Starts `setsid busybox sh tree.sh`: NPROC-5 `busybox sleep` processes and 4 python3
# "hogs" each holding HOG_MIB MiB of dirty memory (random bytes with a marker string planted
# every 64 KiB), dumps the tree with `criu dump --leave-running`, then kills exactly the pids
# it started.  Idempotent: an existing OUTDIR/inventory.img is kept.
set -euo pipefail

OUT=${1:-/tmp/pensieve-bench-cache/criu-big}
NPROC=${2:-400}
HOG=${3:-80}
MARK_KIB=${4:-64}
MARKS=${5:-0}
PYTHON=${PYTHON:-/usr/bin/python3}
. "$(dirname "${BASH_SOURCE[0]}")/../fixtures/capture/lib.sh"
criu_env
cap_require "$CRIU" "$BUSYBOX" "$PY"
if [ -f "$OUT/inventory.img" ]; then echo "$OUT exists" >&2; exit 0; fi
mkdir -p "$OUT"
cap_work pcb
ROOT=""
on_cleanup() { kill_tree "$ROOT"; }
cap_trap

cat >"$WORK/hog.py" <<'PY'
import os, sys, time
mib, every, limit = int(sys.argv[1]), int(sys.argv[3]) << 10, int(sys.argv[4])
marker = b"PENSIEVE-BENCH-NEEDLE"
blocks, planted, pos = [], 0, 0
for i in range(mib):
    b = bytearray(os.urandom(1 << 20))
    while pos < (i + 1) << 20 and (not limit or planted < limit):
        off = pos - (i << 20) + 100
        b[off : off + len(marker)] = marker
        planted += 1
        pos += every
    blocks.append(b)
open(sys.argv[2], "w").write("ok")
time.sleep(10**7)
PY
cat >"$WORK/tree.sh" <<SH
i=0
while [ \$i -lt $((NPROC - 5)) ]; do $BUSYBOX sleep \$((1000000 + i)) & i=\$((i + 1)); done
for h in 1 2 3 4; do $PY $WORK/hog.py $HOG $WORK/hog\$h.ready $MARK_KIB $MARKS & done
wait
SH
(
    close_inherited_fds
    exec setsid "$BUSYBOX" sh "$WORK/tree.sh" </dev/null >/dev/null 2>&1
) &
ROOT=$!
for _ in $(seq 600); do
    [ -f "$WORK/hog1.ready" ] && [ -f "$WORK/hog2.ready" ] && [ -f "$WORK/hog3.ready" ] && [ -f "$WORK/hog4.ready" ] && break
    sleep 0.2
done
sleep 1
echo "tree: $(tree_pids "$ROOT" | wc -w) processes" >&2
"$CRIU" dump -t "$ROOT" -D "$OUT" -o dump.log --leave-running || { tail -20 "$OUT/dump.log" >&2; exit 1; }
echo "dumped: $(du -sh "$OUT" | cut -f1) in $OUT" >&2
