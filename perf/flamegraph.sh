#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# CPU flamegraph of ringway (or a peer) forwarding iperf3 TCP traffic.
#
#   RINGWAY_BIN=target/release/ringway perf/flamegraph.sh
#   STREAMS=4 perf/flamegraph.sh
#   TARGET=envoy perf/flamegraph.sh      # same thing for a peer, for comparison
#
# Same topology as perf/run.sh: iperf3 -s and client on LOAD_CPU (1), the
# profiled proxy alone on PROXY_CPU (0), listening on 127.0.0.1:15201.
# `perf record` samples only the proxy's processes/threads.
#
# Environment:
#   TARGET      ringway (default) | envoy | nginx | haproxy
#   STREAMS     iperf3 -P (default 1; 4 is the other benchmarked point)
#   DURATION    seconds of traffic / sampling (default 10)
#   FREQ        sampling frequency, Hz (default 999)
#   CALLGRAPH   perf --call-graph mode (default dwarf: the release profile
#               has debug=1 but no frame pointers; use fp for binaries built
#               with -C force-frame-pointers=yes, e.g. via RUSTFLAGS)
#   OUT         output SVG (default perf/results/flamegraph-tcp[-TARGET][-P4].svg)
#   RINGWAY_BIN ringway binary; if unset, `cargo build --release` (a no-op
#               when target/release is fresh) and target/release/ringway
#   KEEP_WORK=1 keep the scratch dir, including perf.data
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

TARGET=${TARGET:-ringway}
STREAMS=${STREAMS:-1}
DURATION=${DURATION:-10}
FREQ=${FREQ:-999}
CALLGRAPH=${CALLGRAPH:-dwarf}
MODE=tcp

[[ $STREAMS =~ ^[0-9]+$ && $STREAMS -gt 0 ]] || die "STREAMS must be a positive integer"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer"

suffix=
[[ $TARGET == ringway ]] || suffix+="-$TARGET"
[[ $STREAMS == 1 ]] || suffix+="-P$STREAMS"
OUT=${OUT:-$RESULTS_DIR/flamegraph-$MODE$suffix.svg}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
init_work_dir

# --- tools ------------------------------------------------------------------
tools=(python3 iperf3 perf)
case $TARGET in
  ringway) ;;
  envoy) ;;
  nginx | haproxy) tools+=("$TARGET") ;;
  *) die "unknown TARGET=$TARGET (ringway envoy nginx haproxy)" ;;
esac
ensure_tools "${tools[@]}"
case $TARGET in
  ringway) ensure_ringway ;;
  envoy) ensure_envoy ;;
esac

export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  command -v cargo >/dev/null || die "inferno is missing and cargo is not available to install it"
  log "cargo install inferno (flamegraph renderer, from crates.io)"
  cargo install --locked inferno >&2
fi

# --- run --------------------------------------------------------------------
start_iperf_server
start_proxy "$TARGET" "$MODE" || die "$TARGET did not start"

# Every process in the proxy's tree (nginx: master + worker).  Threads of
# these processes, and anything they spawn later, are followed by perf.
pids=$("${PERFUTIL[@]}" tree "$PROXY_PID" | paste -sd, -)
data="$WORK_DIR/perf.data"

log "perf record -F $FREQ --call-graph $CALLGRAPH -p $pids ($TARGET, $STREAMS stream(s), ${DURATION}s)"
taskset -c "$LOAD_CPU" perf record -F "$FREQ" --call-graph "$CALLGRAPH" \
  -p "$pids" -o "$data" >"$WORK_DIR/perf-record.log" 2>&1 &
perf_pid=$!
STARTED_PIDS+=("$perf_pid")
sleep 0.5   # let perf attach before traffic starts
kill -0 "$perf_pid" 2>/dev/null || { cat "$WORK_DIR/perf-record.log" >&2; die "perf record failed to start"; }

"${PERFUTIL[@]}" measure --label "$TARGET" --streams "$STREAMS" --pid "$PROXY_PID" \
  --json "$WORK_DIR/iperf3.json" --append "$WORK_DIR/results.jsonl" -- \
  taskset -c "$LOAD_CPU" iperf3 -c "$HOST" -p "$PROXY_PORT" \
    -t "$DURATION" -P "$STREAMS" -J ||
  die "iperf3 run failed (see $WORK_DIR)"

kill -INT "$perf_pid" 2>/dev/null || true
wait "$perf_pid" || true
sed 's/^/    /' "$WORK_DIR/perf-record.log" >&2
stop_proxy
[[ -s $data ]] || die "perf recorded nothing"

# --- render -----------------------------------------------------------------
log "rendering $OUT"
mkdir -p "$(dirname "$OUT")"
title="$TARGET tcp_proxy, iperf3 -P $STREAMS, $(nproc)-CPU $(uname -r), proxy pinned to CPU $PROXY_CPU"
perf script -i "$data" 2>"$WORK_DIR/perf-script.log" |
  inferno-collapse-perf >"$WORK_DIR/collapsed.txt"
[[ -s $WORK_DIR/collapsed.txt ]] || die "no stacks collapsed (see $WORK_DIR/perf-script.log)"
inferno-flamegraph --title "$title" <"$WORK_DIR/collapsed.txt" >"$OUT"

# A short text summary: top self-time frames.
log "top frames by self samples:"
awk '{n=$NF; s=$0; sub(/ [0-9]+$/, "", s); k=split(s, f, ";"); self[f[k]]+=n; tot+=n}
     END {for (s in self) printf "%6.2f%%  %s\n", 100*self[s]/tot, s}' \
  "$WORK_DIR/collapsed.txt" | sort -rn | awk 'NR <= 15' >&2
log "wrote $OUT"
