#!/usr/bin/env bash
# make_docker_root.sh -- build a REAL Docker data root (overlay2) with N containers for benchmarks.
#
# Usage: sudo bench/make_docker_root.sh OUT N
#
#   OUT  directory that becomes the Docker data root (replaced if it exists; must not be mounted)
#   N    number of "inventory" containers (>= 1)
#
# What ends up in OUT:
#   images  pensieve-bench/base:1   docker import of a busybox-static rootfs (1 layer)
#           pensieve-bench/app:1    FROM base + 2 RUN layers + ENV/LABEL/CMD (3 layers)
#           pensieve-bench/big:1    FROM base + 1 RUN layer of 20,000 small files in 200 dirs
#   N inventory containers on pensieve-bench/app:1 (`docker create --network none`), with
#     labels on 1 in 3, env on 1 in 2, a named volume on 1 in 5, a bind mount on 1 in 7;
#     1 in 10 is started (`sleep 100000`, still "running" after the crash),
#     1 in 10 (offset 5) ran and exited with code (i / 10) % 4, the rest stay "created";
#   3 diff containers (ran once, exited 0) for bench_diff.py:
#     diff-big-10     on big:1,  10 changes  (5 modified image files, 3 added, 2 deleted)
#     diff-big-5000   on big:1,  5000 changes (2500 modified, 2000 added, 500 deleted)
#     diff-small-10   on app:1,  10 changes  (5 modified, 3 added, 2 deleted)
#   so OUT holds N + 3 containers.
#
# How it stops: STOP=crash (default) kill -9's ONLY the pids this script started (dockerd, its
# containerd, shims, container processes), like a host crash: configs still say Running.
# STOP=clean sends SIGTERM to dockerd and waits (containers are stopped by the engine).
# Either way, every mount under OUT and the temp dir is unmounted afterwards.
#
# Requirements: root, docker.io 20.10 (dockerd/containerd/runc), busybox-static, findmnt.
# Idempotent: OUT is replaced; each run uses a fresh temp dir, removed at exit (OUT is kept).
set -euo pipefail

[ $# -eq 2 ] || { echo "usage: $0 OUT N" >&2; exit 2; }
OUT=$1; N=$2
case "$N" in ''|*[!0-9]*) echo "$0: N must be a positive integer" >&2; exit 2;; esac
[ "$N" -ge 1 ] || { echo "$0: N must be >= 1" >&2; exit 2; }
STOP=${STOP:-crash}
JOBS=${JOBS:-4}                                 # parallel `docker create` calls
. "$(dirname "${BASH_SOURCE[0]}")/../fixtures/capture/lib.sh"
cap_require "$DOCKER_BIN" "$DOCKERD_BIN" "$BUSYBOX" findmnt xargs

mkdir -p "$(dirname "$OUT")"
OUT=$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")
if findmnt -rn -o TARGET | awk -v r="$OUT" '$0 == r || index($0, r "/") == 1' | grep -q .; then
    echo "$0: something is mounted at or under $OUT; refusing to replace it" >&2; exit 1
fi
rm -rf --one-file-system "$OUT"
mkdir -p "$OUT"

cap_work pmr
dockerd_paths "$WORK" "$OUT"                   # the data root is OUT, the rest in the temp dir
CGP=pensieve-bench-$$                      # private cgroup parent: finds our container pids

on_cleanup() {
    dockerd_crash >/dev/null 2>&1
    umount_at_or_under "$OUT"; umount_under "$WORK"
    cgroup_remove "$CGP"
    [ "$CAP_RC" = 0 ] || log "FAILED (rc=$CAP_RC); dockerd log was $DLOG"
}
cap_trap

# ---------------------------------------------------------------- daemon
dockerd_start_or_die overlay2

# ---------------------------------------------------------------- images
R=$WORK/rootfs
mkdir -p "$R"/{bin,etc,root,tmp,proc,sys,dev,var/log,opt}
rootfs_busybox "$R" sh ls cat echo sleep rm mkdir chmod touch mv cp ln head tail wc printf seq env true false
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
chmod 1777 "$R/tmp"
dk_import_rootfs "$R" pensieve-bench/base:1 "pensieve bench busybox rootfs"
log "imported pensieve-bench/base:1"

B=$WORK/build
mkdir -p "$B/app" "$B/big"
cat >"$B/app/Dockerfile" <<'EOF'
FROM pensieve-bench/base:1
LABEL org.opencontainers.image.title="pensieve-bench-app" maintainer="bench@pensieve.invalid"
ENV APP_HOME=/opt/app APP_ENV=bench
RUN mkdir -p /opt/app/bin /opt/app/data && \
    for i in 1 2 3 4 5 6 7 8; do echo "file $i" > /opt/app/data/f$i.txt; done && \
    printf 'listen=127.0.0.1:8080\n' > /etc/app.conf
RUN printf '#!/bin/sh\necho app\n' > /opt/app/bin/run && chmod 755 /opt/app/bin/run && \
    rm /opt/app/data/f8.txt
WORKDIR /opt/app
CMD ["/opt/app/bin/run"]
EOF
dk build --network none -q -t pensieve-bench/app:1 "$B/app" >/dev/null
log "built pensieve-bench/app:1"

cat >"$B/big/Dockerfile" <<'EOF'
FROM pensieve-bench/base:1
RUN d=0; while [ $d -lt 200 ]; do mkdir -p /big/d$d; f=0; \
      while [ $f -lt 100 ]; do echo "big $d $f" > /big/d$d/f$f.txt; f=$((f+1)); done; d=$((d+1)); done
CMD ["/bin/sh"]
EOF
dk build --network none -q -t pensieve-bench/big:1 "$B/big" >/dev/null
log "built pensieve-bench/big:1 (20,000 files)"

# ---------------------------------------------------------------- diff containers
# $1 name, $2 image, $3 dir of image files, $4 modified, $5 added, $6 deleted
run_changes() {
    local name=$1 img=$2 dir=$3 nm=$4 na=$5 nd=$6
    dk run --name "$name" --network none "$img" sh -c "
        set -e; i=0
        for f in \$(ls $dir | head -n $((nm + nd))); do
            if [ \$i -lt $nm ]; then echo changed >> $dir/\$f; else rm $dir/\$f; fi; i=\$((i+1))
        done
        mkdir -p /added; i=0
        while [ \$i -lt $na ]; do echo new > /added/n\$i; i=\$((i+1)); done" >/dev/null
}
# added files live under /added: that directory itself is one more (added) entry, so
# "10 changes" = 5 modified + 2 deleted + 2 files + /added; "5000" = 2500 + 500 + 1999 + /added.
run_changes diff-small-10 pensieve-bench/app:1 /opt/app/data 5 2 2
# big image: modified/deleted files are spread over /big/d0 (first 100) and /big/d1 ...
dk run --name diff-big-10 --network none pensieve-bench/big:1 sh -c '
    set -e; i=0; while [ $i -lt 5 ]; do echo changed >> /big/d0/f$i.txt; i=$((i+1)); done
    rm /big/d1/f0.txt /big/d1/f1.txt; mkdir /added; echo new > /added/n0; echo new > /added/n1' >/dev/null
dk run --name diff-big-5000 --network none pensieve-bench/big:1 sh -c '
    set -e; d=0; while [ $d -lt 25 ]; do f=0; while [ $f -lt 100 ]; do
        echo changed >> /big/d$d/f$f.txt; f=$((f+1)); done; d=$((d+1)); done
    d=100; while [ $d -lt 105 ]; do f=0; while [ $f -lt 100 ]; do
        rm /big/d$d/f$f.txt; f=$((f+1)); done; d=$((d+1)); done
    mkdir /added; i=0; while [ $i -lt 1999 ]; do echo new > /added/n$i; i=$((i+1)); done' >/dev/null
log "diff containers: diff-small-10 diff-big-10 diff-big-5000"
for c in diff-small-10 diff-big-10 diff-big-5000; do
    printf '  %s: %s changes reported by docker diff\n' "$c" "$(dk diff "$c" | wc -l)" >&2
done

# ---------------------------------------------------------------- inventory containers
log "creating $N containers ($JOBS in parallel)"
create_one() {   # $1 = index
    local i=$1
    local args=(--network none --name "inv-$(printf '%04d' "$i")")
    (( i % 3 == 0 )) && args+=(--label "bench.index=$i" --label "bench.team=t$((i % 7))" --label tier=web)
    (( i % 2 == 0 )) && args+=(-e "BENCH_I=$i" -e "SECRET_TOKEN=tok-$i" -e "MODE=m$((i % 5))")
    (( i % 5 == 0 )) && args+=(-v "vol-$((i % 20)):/opt/app/data")
    (( i % 7 == 0 )) && args+=(-v "/tmp/pensieve-bench-bind-$i:/mnt/host:ro")
    if (( i % 10 == 0 )); then
        dk create "${args[@]}" pensieve-bench/app:1 sleep 100000 >/dev/null
    elif (( i % 10 == 5 )); then
        dk create "${args[@]}" pensieve-bench/app:1 sh -c "echo run $i; exit $(( (i / 10) % 4 ))" >/dev/null
    else
        dk create "${args[@]}" pensieve-bench/app:1 >/dev/null
    fi
}
export -f create_one dk
export DOCKER_BIN
seq 0 $((N - 1)) | xargs -P "$JOBS" -I{} bash -c 'create_one {}'
log "created $N; starting 1 in 10 (sleep) and running 1 in 10 to exit"
dk ps -a --filter name=inv- --format '{{.Names}}' | sort | while read -r name; do
    i=$((10#${name#inv-}))
    if (( i % 10 == 0 || i % 10 == 5 )); then echo "$name"; fi
done | xargs -r -P "$JOBS" -n 8 "$DOCKER_BIN" start >/dev/null
sleep 1
log "containers: $(dk ps -aq | wc -l) total, $(dk ps -q | wc -l) running"

# ---------------------------------------------------------------- stop
if [ "$STOP" = clean ]; then
    log "SIGTERM dockerd $DPID"
    dockerd_stop
fi
dockerd_crash   # a crash, or anything a clean stop left (should be nothing)
rm -rf /tmp/pensieve-bench-bind-* 2>/dev/null || true   # bind sources docker created on the host
umount_at_or_under "$OUT"; umount_under "$WORK"
log "done: data root $OUT ($(du -sh "$OUT" | cut -f1)), stop=$STOP"
