#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A/B of two ringway binaries, side by side: both run at once on the proxy
# core, each with its own load on the load core, round after round, swapping
# their places each round.  They share whatever the machine does meanwhile
# (a noisy VM moves single runs by 10-40%), so the ratio of their results is
# steady where two runs one after the other are not: a change worth 2% shows.
#
#   perf/ab.sh OLD_BINARY NEW_BINARY
#   MODE=mtls ROUNDS=6 perf/ab.sh /tmp/ringway-old target/release/ringway
#
# Environment:
#   MODE      http (default): wrk -c64 keep-alive GET /small through each
#             binary's HTTP listener to one nginx origin (configs/http-envoy.yaml).
#             https: the same over TLS to each binary (configs/https-envoy.yaml).
#             mtls: iperf3 through a double proxy of each binary, plain in,
#             mutual TLS between its halves, plain out (configs/tls-*-envoy.yaml).
#   ROUNDS    rounds (default 4); DURATION seconds each (default 8)
#   STREAMS   MODE=mtls: iperf3 -P (default 1)
#   HOG       1: a busy loop shares the proxy core too, so that the two
#             binaries, not the load core, are what runs out (each gets at
#             most a third of the core); without it both cores are near their
#             limit and a difference shows smaller than it is.
#   PROXY_CPU, LOAD_CPU as in run.sh.
#
# Prints each round's figures for A and B, with each one's CPU time, and the
# means of B ÷ A in throughput and per CPU-second.  Per CPU-second is the
# one to judge by: sharing a core, a build that blocks less is given more of
# it, so its throughput rises even if it does no more per CPU-second.
# Nothing is written under results/: this is for deciding whether a change
# helps.  The proxy core is shared, so the figures are about half of run.sh's.
set -euo pipefail

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

[[ $# -eq 2 ]] || die "usage: perf/ab.sh BINARY_A BINARY_B"
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
[[ -x $BIN_A && -x $BIN_B ]] || die "both binaries must exist and be executable"
MODE=${MODE:-http}
ROUNDS=${ROUNDS:-4}
DURATION=${DURATION:-8}
STREAMS=${STREAMS:-1}
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "ROUNDS must be a positive integer"
[[ $DURATION =~ ^[0-9]+$ && $DURATION -gt 0 ]] || die "DURATION must be a positive integer"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
init_work_dir

# shift_ports FILE OUT FROM:TO... : FILE with each port_value FROM made TO.
shift_ports() {
  local in=$1 out=$2 expr=(-e '') pair
  shift 2
  for pair in "$@"; do expr+=(-e "s/port_value: ${pair%%:*}\$/port_value: ${pair##*:}/"); done
  sed "${expr[@]}" "$in" >"$out"
}

# Two slots, 0 and 1, each a full set of ports; a binary takes a slot per round.
B_PORTS=()
case $MODE in
  http)
    ensure_tools wrk nginx-http python3
    use_mode_ports http
    start_http_upstream
    shift_ports "$CONFIG_DIR/http-envoy.yaml" "$WORK_DIR/slot0.yaml"
    shift_ports "$CONFIG_DIR/http-envoy.yaml" "$WORK_DIR/slot1.yaml" 18080:18081 9902:9912
    SLOT_PORTS=("18080" "18081")
    ;;
  https)
    ensure_tools wrk nginx-http python3 openssl
    use_mode_ports tls-https
    make_certs "$WORK_DIR/certs" >/dev/null
    start_http_upstream
    shift_ports "$CONFIG_DIR/https-envoy.yaml" "$WORK_DIR/slot0.yaml"
    shift_ports "$CONFIG_DIR/https-envoy.yaml" "$WORK_DIR/slot1.yaml" 18443:18444 9902:9912
    SLOT_PORTS=("18443" "18444")
    ;;
  mtls)
    ensure_tools iperf3 openssl python3
    make_certs "$WORK_DIR/certs" >/dev/null
    UPSTREAM_PORT=5201 start_iperf_server
    UPSTREAM_PORT=5202 start_iperf_server
    for side in client server; do
      shift_ports "$CONFIG_DIR/tls-$side-envoy.yaml" "$WORK_DIR/slot0-$side.yaml"
      shift_ports "$CONFIG_DIR/tls-$side-envoy.yaml" "$WORK_DIR/slot1-$side.yaml" \
        15201:15211 15202:15212 5201:5202 9902:9912 9903:9913
    done
    SLOT_PORTS=("15201" "15211")
    B_PORTS=("15202" "15212")
    ;;
  *) die "unknown MODE=$MODE (http https mtls)" ;;
esac

# start_slot SLOT BINARY : that binary's proxy (or pair) on the slot's ports;
# its processes in PIDS_OF[SLOT].
SLOT_PIDS=()
PIDS_OF=("" "")
start_slot() {
  local slot=$1 bin=$2
  if [[ $MODE == http* ]]; then
    BG_CWD=$WORK_DIR start_bg "slot$slot" "$PROXY_CPU" "$bin" -c "$WORK_DIR/slot$slot.yaml" --concurrency 1
    SLOT_PIDS+=("$BG_PID")
    PIDS_OF[slot]=$BG_PID
  else
    # Side B (mTLS in) first, so side A has somewhere to connect.
    BG_CWD=$WORK_DIR start_bg "slot$slot-server" "$PROXY_CPU" "$bin" -c "$WORK_DIR/slot$slot-server.yaml" --concurrency 1
    SLOT_PIDS+=("$BG_PID")
    wait_listen "${B_PORTS[$slot]}" "$BG_PID" || die "slot $slot side B did not start; see $WORK_DIR/slot$slot-server.log"
    PIDS_OF[slot]=$BG_PID
    BG_CWD=$WORK_DIR start_bg "slot$slot-client" "$PROXY_CPU" "$bin" -c "$WORK_DIR/slot$slot-client.yaml" --concurrency 1
    SLOT_PIDS+=("$BG_PID")
    PIDS_OF[slot]+=" $BG_PID"
  fi
  wait_listen "${SLOT_PORTS[$slot]}" "$BG_PID" || die "slot $slot did not start; see $WORK_DIR/slot$slot*.log"
}

# load SLOT : the load on the slot, in the background; its result in load$SLOT.out.
LOAD_PIDS=()
load() {
  local slot=$1 port=${SLOT_PORTS[$1]}
  if [[ $MODE == http* ]]; then
    taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"${DURATION}s" "$MODE://$HOST:$port/small" >"$WORK_DIR/load$slot.out" 2>&1 &
  else
    taskset -c "$LOAD_CPU" iperf3 -c "$HOST" -p "$port" -t "$DURATION" -P "$STREAMS" -J >"$WORK_DIR/load$slot.out" 2>&1 &
  fi
  LOAD_PIDS+=("$!")
}

# cpu SLOT : CPU seconds used so far by the slot's processes.
cpu() {
  local total=0 pid
  for pid in ${PIDS_OF[$1]}; do
    total=$(python3 -c "print($total + $("${PERFUTIL[@]}" cputime "$pid"))")
  done
  echo "$total"
}

# figure SLOT : req/s or Gbit/s from the slot's load output.
figure() {
  local out="$WORK_DIR/load$1.out"
  if [[ $MODE == http* ]]; then
    awk '/^Requests\/sec:/ {print $2}' "$out"
  else
    python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9, 3))' "$out"
  fi
}

if [[ ${HOG:-} == 1 ]]; then
  start_bg hog "$PROXY_CPU" sh -c 'while :; do :; done'
fi

unit=$([[ $MODE == http* ]] && echo "req/s" || echo "Gbit/s")
log "A = $BIN_A"
log "B = $BIN_B"
ratios=() per_ratios=()
for ((round = 1; round <= ROUNDS; round++)); do
  # Odd rounds: A in slot 0; even rounds: B in slot 0.
  if ((round % 2)); then slot_a=0 slot_b=1; else slot_a=1 slot_b=0; fi
  SLOT_PIDS=() LOAD_PIDS=()
  start_slot "$slot_a" "$BIN_A"
  start_slot "$slot_b" "$BIN_B"
  cpu_a0=$(cpu "$slot_a") cpu_b0=$(cpu "$slot_b")
  load 0
  load 1
  wait "${LOAD_PIDS[@]}"
  cpu_a=$(python3 -c "print($(cpu "$slot_a") - $cpu_a0)") cpu_b=$(python3 -c "print($(cpu "$slot_b") - $cpu_b0)")
  a=$(figure "$slot_a")
  b=$(figure "$slot_b")
  [[ -n $a && -n $b ]] || die "no result in round $round; see $WORK_DIR/load*.out"
  for pid in "${SLOT_PIDS[@]}"; do stop_pid "$pid"; done
  for port in "${SLOT_PORTS[@]}" "${B_PORTS[@]}"; do wait_free "$port" || die "port $port still in use"; done
  # Per CPU-second: what each moved for the CPU it was given. Sharing a
  # core, a binary that blocks less gets more of it (the scheduler shares
  # among the runnable), so raw throughput alone can flatter a change that
  # only waits less.
  read -r ratio per_a per_b per_ratio < <(python3 -c "
a, b, ca, cb, d = $a, $b, $cpu_a, $cpu_b, $DURATION
pa, pb = a * d / ca, b * d / cb
print(f'{b / a:.3f} {pa:.4g} {pb:.4g} {pb / pa:.3f}')")
  ratios+=("$ratio")
  per_ratios+=("$per_ratio")
  printf 'round %d: A %s %s (%s per CPU-s, %.2f CPU-s), B %s %s (%s per CPU-s, %.2f CPU-s): B/A %s, per CPU %s\n' \
    "$round" "$a" "$unit" "$per_a" "$cpu_a" "$b" "$unit" "$per_b" "$cpu_b" "$ratio" "$per_ratio"
done
summary='import sys
r = [float(x) for x in sys.argv[2:]]
print(f"mean B/A {sys.argv[1]} over {len(r)} rounds: {sum(r)/len(r):.3f} (min {min(r):.3f}, max {max(r):.3f})")'
python3 -c "$summary" "$unit" "${ratios[@]}"
python3 -c "$summary" "per CPU-second" "${per_ratios[@]}"
