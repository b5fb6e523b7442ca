#!/usr/bin/env python3
"""Small helpers for perf/run.sh and perf/flamegraph.sh (stdlib only).

Subcommands:
  listening PORT              exit 0 iff something LISTENs on TCP PORT
                              (checked in /proc/net/tcp{,6}; no connection
                              is made, so nothing reaches the upstream)
  tree PID                    print PID and all its live descendants
  alive PID                   exit 0 iff PID exists and is not a zombie
  cputime PID                 print CPU seconds (utime+stime, all threads)
                              used so far by PID's process tree
  affinity PID CPULIST        warn on stderr about threads in PID's tree
                              allowed to run outside CPULIST
  measure --label L --streams N [--pid PID]... --json FILE --append RAW
          [--field K=V]... -- CMD...
                              run CMD (an `iperf3 -J` client), sample the
                              proxy tree's CPU time around it and append
                              one JSON line of results to RAW.  With several
                              --pid (a double proxy), their CPU times are
                              summed, and also kept one by one (cpu_parts);
                              --field adds K=V to the JSON line
  measure --tool wrk --label L --scenario S [--pid PID] --out FILE
          --append RAW -- CMD...
                              the same for a `wrk --latency -s latency.lua`
                              client (HTTP mode)
  probe URL [--length N] [--body B] [--cafile CA]
                              one GET; exit 0 iff it answers 200 (with an
                              N-byte body if given).  https: the server's
                              certificate is checked against CA
  stats URL --save FILE [--since FILE] [--match REGEX]
                              fetch an Envoy-style /stats page (name: value
                              lines), save it, and print the counters
                              matching REGEX that grew since the --since
                              file (all non-zero ones without it)
  mtls-check --port P --upstream-port U --certs DIR
                              check that the mTLS listener on P passes a
                              client with certs/client.pem to the upstream
                              port U (played by an echo server here) and
                              refuses one without a certificate and one
                              with certs/intruder.pem (right CA, wrong SAN)
  table RAW MD [--mode tcp|http|tls] [--title T] [--meta K=V ...]
        [--baseline NAME]     render RAW as a markdown table, print it and
                              write it to MD
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------

def _stat_fields(path):
    """Fields of a /proc stat file after the `(comm)` field.

    Returned list index 0 is field 3 (state) of proc(5), so field N is
    at index N - 3.  comm may contain spaces or parentheses, hence rsplit.
    """
    with open(path, "rb") as f:
        data = f.read().decode("utf-8", "replace")
    return data.rsplit(")", 1)[1].split()


def _all_ppids():
    ppids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppids[int(name)] = int(_stat_fields(f"/proc/{name}/stat")[1])
        except (OSError, IndexError, ValueError):
            continue  # raced with exit
    return ppids


def proc_tree(root):
    ppids = _all_ppids()
    if root not in ppids:
        return []
    children = {}
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(out)


def tree_cpu_seconds(root):
    """utime+stime (fields 14, 15) summed over a process tree.

    /proc/PID/stat covers every thread of the thread group, live or exited,
    including io_uring io-wq / SQPOLL workers (they belong to the thread
    group since Linux 5.12).
    """
    ticks = 0
    for pid in proc_tree(root):
        try:
            f = _stat_fields(f"/proc/{pid}/stat")
        except OSError:
            continue
        ticks += int(f[14 - 3]) + int(f[15 - 3])
    return ticks / CLK_TCK


def is_alive(pid):
    """True if PID exists and is neither a zombie nor dead."""
    try:
        return _stat_fields(f"/proc/{pid}/stat")[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _parse_cpulist(s):
    cpus = set()
    for part in s.strip().split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-")
            cpus.update(range(int(a), int(b) + 1))
        else:
            cpus.add(int(part))
    return cpus


def check_affinity(root, cpulist):
    want = _parse_cpulist(cpulist)
    bad = []
    for pid in proc_tree(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    status = dict(
                        line.split(":", 1) for line in f if ":" in line
                    )
            except OSError:
                continue
            allowed = _parse_cpulist(status.get("Cpus_allowed_list", ""))
            if not allowed <= want:
                bad.append(
                    f"{status.get('Name', '?').strip()}[{tid}] "
                    f"allowed on CPUs {status['Cpus_allowed_list'].strip()}"
                )
    for b in bad:
        print(f"perf: warning: thread {b} (expected {cpulist})",
              file=sys.stderr)
    return 0


def core_times(cores):
    """{core: (busy_ticks, total_ticks, steal_ticks)} from /proc/stat.

    busy = user+nice+system+irq+softirq; total adds idle, iowait and steal.
    steal: time the hypervisor ran something else while this vCPU wanted
    to run.
    """
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            cols = line.split()
            if not cols[0].startswith("cpu") or cols[0] == "cpu":
                continue
            core = int(cols[0][3:])
            if core not in cores:
                continue
            v = [int(x) for x in cols[1:9]]
            user, nice, system, idle, iowait, irq, softirq, steal = v
            out[core] = (user + nice + system + irq + softirq, sum(v), steal)
    return out


def is_listening(port):
    # /proc/net/tcp local_address is HEX_IP:HEX_PORT, st 0A == LISTEN.
    hexport = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] == "0A" and cols[1].rsplit(":", 1)[1] == hexport:
                        return True
        except OSError:
            continue
    return False


# --------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------

def _run_sampled(args):
    """Run args.cmd (stdout to args.out), sampling the proxy tree's CPU time
    and the listed cores' busy time around it.  Returns (rc, row)."""
    cores = [int(c) for c in args.cores.split(",") if c != ""]
    pids = _pids(args)
    cpu0 = [tree_cpu_seconds(p) for p in pids]
    core0 = core_times(cores)
    t0 = time.monotonic()
    with open(args.out, "w") as out:
        rc = subprocess.call(args.cmd, stdout=out)
    wall = time.monotonic() - t0
    core1 = core_times(cores)
    cpu1 = [tree_cpu_seconds(p) for p in pids]
    parts = [round(b - a, 3) for a, b in zip(cpu0, cpu1)]
    row = {
        "label": args.label,
        "wall_s": round(wall, 3),
        "cpu_s": round(sum(parts), 3) if pids else None,
        "error": None,
        # % busy of each listed core over the run, whoever used it.
        "core_busy": {
            str(c): round(100.0 * (core1[c][0] - core0[c][0])
                          / max(1, core1[c][1] - core0[c][1]), 1)
            for c in cores if c in core0 and c in core1
        },
        # % of each core's time stolen by the hypervisor over the run.
        "core_steal": {
            str(c): round(100.0 * (core1[c][2] - core0[c][2])
                          / max(1, core1[c][1] - core0[c][1]), 1)
            for c in cores if c in core0 and c in core1
        },
    }
    if len(pids) > 1:
        # A double proxy: each process's share (in --pid order).
        row["cpu_parts"] = parts
    for kv in args.field or []:
        k, _, v = kv.partition("=")
        row[k] = v
    return rc, row


def _pids(args):
    """The proxy PIDs given with --pid (0: none, e.g. the direct row)."""
    return [p for p in (args.pid or []) if p]


def _cpu_msg(row, seconds):
    msg = f", proxy CPU {100 * row['cpu_s'] / seconds:.0f}%"
    if row.get("cpu_parts"):
        msg += " (" + " + ".join(f"{100 * c / seconds:.0f}%"
                                 for c in row["cpu_parts"]) + ")"
    return msg


def _cores_msg(row):
    if not row["core_busy"]:
        return ""
    return ", cores busy " + " ".join(
        f"{c}:{v:.0f}%" for c, v in row["core_busy"].items())


def measure(args):
    if args.tool == "wrk":
        return measure_wrk(args)
    if args.streams is None:
        print("perfutil: measure: --streams is required for iperf3",
              file=sys.stderr)
        return 2
    rc, row = _run_sampled(args)
    row = {"label": row.pop("label"), "streams": args.streams, **row}
    try:
        with open(args.out) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        doc = {"error": f"iperf3 exit {rc}, unreadable JSON: {e}"}
    if doc.get("error"):
        row["error"] = str(doc["error"])
    else:
        try:
            s = doc["end"]["sum_received"]
            row["bps"] = float(s["bits_per_second"])
            row["bytes"] = int(s["bytes"])
            row["seconds"] = float(s["seconds"])
        except (KeyError, TypeError, ValueError) as e:
            row["error"] = f"no end.sum_received in iperf3 output ({e})"
    if rc != 0 and not row["error"]:
        row["error"] = f"iperf3 exited {rc}"

    with open(args.append, "a") as f:
        f.write(json.dumps(row) + "\n")

    if row["error"]:
        print(f"    {args.label} P={args.streams}: FAILED: {row['error']}",
              file=sys.stderr)
        return 1
    msg = f"    {args.label} P={args.streams}: {row['bps'] / 1e9:.2f} Gbit/s"
    if row["cpu_s"] is not None:
        msg += _cpu_msg(row, row["seconds"])
    msg += _cores_msg(row)
    print(msg, file=sys.stderr)
    if args.suspect:
        cores = args.cores.split(",") if args.cores else [""]
        why = _suspect(row, cores[0], cores[0] in cores[1:])
        if why:
            print(f"perf: warning: {args.label} P={args.streams}: {why}; "
                  "this run is suspect", file=sys.stderr)
    return 0


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text):
    """Parse the stdout of `wrk --latency -s latency.lua`.

    From wrk's own text: Requests/sec, the --latency table (50/75/90/99 %),
    "Non-2xx or 3xx responses" and "Socket errors" (both printed only when
    non-zero).  From latency.lua's done(): p50/p99/p99.9 in microseconds and
    exact counters.  Latencies are returned in milliseconds.
    """
    out = {"non2xx": 0, "sock_errors": {"connect": 0, "read": 0,
                                        "write": 0, "timeout": 0}}
    m = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    m = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", text, re.M)
    if m:
        out["non2xx"] = int(m.group(1))
    m = re.search(r"^\s*Socket errors: connect (\d+), read (\d+), "
                  r"write (\d+), timeout (\d+)", text, re.M)
    if m:
        out["sock_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                      map(int, m.groups())))
    # wrk's table: "     99%    1.23ms"
    table = {}
    for pct, val, unit in re.findall(
            r"^\s+(50|75|90|99)%\s+([0-9.]+)(us|ms|s|m|h)\s*$", text, re.M):
        table[pct] = float(val) * _UNITS[unit]
    out["wrk_latency_ms"] = table
    lat = {}
    for pct, us in re.findall(r"^perf-latency p([0-9.]+) (\d+)$", text, re.M):
        lat[pct] = int(us) / 1000.0
    out["p50_ms"] = lat.get("50", table.get("50"))
    out["p99_ms"] = lat.get("99", table.get("99"))
    out["p999_ms"] = lat.get("99.9")
    m = re.search(r"^perf-summary (.*)$", text, re.M)
    if m:
        kv = dict(p.split("=", 1) for p in m.group(1).split())
        out["requests"] = int(kv["requests"])
        out["seconds"] = int(kv["duration_us"]) / 1e6
        out["bytes"] = int(kv["bytes"])
        out["status_errors"] = int(kv["status"])
    return out


def _suspect(row, proxy_core, shared):
    """Why a run's numbers are doubtful (other work on the proxy core,
    hypervisor steal), or None."""
    why = []
    busy = row.get("core_busy", {}).get(proxy_core)
    own = (100 * row["cpu_s"] / row["seconds"]
           if row.get("cpu_s") is not None and row.get("seconds") else 0)
    if busy is not None and not shared and busy - own > 15:
        why.append(f"CPU {proxy_core} {busy:.0f}% busy, proxy {own:.0f}%: "
                   "something else ran on the proxy core")
    for c, s in row.get("core_steal", {}).items():
        if s > 5:
            why.append(f"{s:.0f}% steal on CPU {c}")
    return "; ".join(why) or None


def measure_wrk(args):
    rc, row = _run_sampled(args)
    row = {"label": row.pop("label"), "scenario": args.scenario, **row}
    if any(not is_alive(p) for p in _pids(args)):
        # Its CPU time is gone with it, and wrk measured a dying proxy.
        row["error"] = "proxy exited during the run"
        row["cpu_s"] = None
    try:
        with open(args.out) as f:
            text = f.read()
    except OSError as e:
        text = ""
        row["error"] = f"wrk exit {rc}, no output: {e}"
    if not row["error"]:
        w = parse_wrk(text)
        if "rps" not in w or "requests" not in w or w["p999_ms"] is None:
            first = text.strip().splitlines()[:1]
            row["error"] = (f"wrk exited {rc}; unparsable output"
                            + (f": {first[0]}" if first else ""))
        else:
            row.update(w)
            if w["requests"] == 0:
                row["error"] = "no request completed"
    if rc != 0 and not row["error"]:
        row["error"] = f"wrk exited {rc}"

    with open(args.append, "a") as f:
        f.write(json.dumps(row) + "\n")

    what = f"    {args.label} {args.scenario}"
    if row["error"]:
        print(f"{what}: FAILED: {row['error']}", file=sys.stderr)
        return 1
    errs = sum(row["sock_errors"].values())
    msg = (f"{what}: {row['rps']:.0f} req/s, p50 {row['p50_ms']:.2f} ms, "
           f"p99 {row['p99_ms']:.2f} ms, p99.9 {row['p999_ms']:.2f} ms")
    if row["cpu_s"] is not None:
        msg += _cpu_msg(row, row["seconds"])
    msg += _cores_msg(row)
    if row["non2xx"] or errs:
        msg += (f", NON-2xx {row['non2xx']}, socket errors "
                + " ".join(f"{k} {v}" for k, v in row["sock_errors"].items()))
    print(msg, file=sys.stderr)
    # The first of --cores is the proxy's (unless the load shares it).
    cores = args.cores.split(",") if args.cores else [""]
    why = _suspect(row, cores[0], cores[0] in cores[1:])
    if why:
        print(f"perf: warning: {args.label} {args.scenario}: {why}; this run "
              "is suspect", file=sys.stderr)
    if args.min_body and row["requests"] and (
            row["bytes"] / row["requests"] < args.min_body):
        print(f"perf: warning: {args.label} {args.scenario}: "
              f"{row['bytes'] / row['requests']:.0f} bytes per response on "
              f"average, expected at least {args.min_body}", file=sys.stderr)
    return 0


def probe(args):
    """One GET; 0 iff status 200 (and the body has --length bytes)."""
    req = urllib.request.Request(args.url)
    ctx = None
    if args.cafile:
        import ssl
        # Checks the chain and the name (here the IP SAN 127.0.0.1).
        ctx = ssl.create_default_context(cafile=args.cafile)
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as resp:
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (OSError, ValueError) as e:
        print(f"perf: probe {args.url}: {e}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"perf: probe {args.url}: status {status}, body "
              f"{body[:200]!r}", file=sys.stderr)
        return 1
    if args.length is not None and len(body) != args.length:
        print(f"perf: probe {args.url}: {len(body)} body bytes, expected "
              f"{args.length}", file=sys.stderr)
        return 1
    if args.body is not None and body != args.body.encode():
        print(f"perf: probe {args.url}: body {body[:200]!r}, expected "
              f"{args.body!r}", file=sys.stderr)
        return 1
    return 0


def _read_stats(text):
    out = {}
    for line in text.splitlines():
        name, sep, val = line.partition(": ")
        if sep and val.strip().lstrip("-").isdigit():
            out[name.strip()] = int(val)
    return out


def stats(args):
    """Save an admin /stats page; print matching counters that grew."""
    try:
        with urllib.request.urlopen(args.url, timeout=5) as resp:
            text = resp.read().decode("utf-8", "replace")
    except (OSError, ValueError) as e:
        print(f"perf: stats {args.url}: {e}", file=sys.stderr)
        return 1
    with open(args.save, "w") as f:
        f.write(text)
    new = _read_stats(text)
    old = {}
    if args.since:
        try:
            with open(args.since) as f:
                old = _read_stats(f.read())
        except OSError:
            pass
    rx = re.compile(args.match or ".")
    for name in sorted(new):
        d = new[name] - old.get(name, 0)
        if d and rx.search(name):
            print(f"{name} +{d}" if args.since else f"{name} {new[name]}")
    return 0


def mtls_check(args):
    """Three TLS clients against an mTLS listener whose upstream is an echo
    server run here: the client certificate must get through (its bytes
    come back), no certificate and the intruder's (same CA, another SAN)
    must not."""
    import socket
    import ssl
    import threading

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind(("127.0.0.1", args.upstream_port))
    except OSError as e:
        print(f"perf: mtls-check: cannot listen on {args.upstream_port}: {e}",
              file=sys.stderr)
        return 1
    srv.listen(16)
    stop = threading.Event()

    def echo(conn):
        with conn:
            conn.settimeout(5)
            try:
                while True:
                    b = conn.recv(4096)
                    if not b:
                        return
                    conn.sendall(b)
            except OSError:
                return

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()

    def attempt(cert):
        ctx = ssl.create_default_context(
            cafile=os.path.join(args.certs, "ca.pem"))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if cert:
            ctx.load_cert_chain(os.path.join(args.certs, f"{cert}.pem"),
                                os.path.join(args.certs, f"{cert}.key"))
        msg = b"ringway-perf mtls check\n"
        try:
            with socket.create_connection(("127.0.0.1", args.port),
                                          timeout=5) as raw:
                with ctx.wrap_socket(
                        raw, server_hostname=args.server_name) as tls:
                    tls.sendall(msg)
                    got = b""
                    while len(got) < len(msg):
                        b = tls.recv(4096)
                        if not b:
                            break
                        got += b
            if got == msg:
                return True, "relayed"
            return False, "closed without relaying"
        except ssl.SSLError as e:
            return False, f"refused ({e.reason or e})"
        except OSError as e:
            return False, f"refused ({e})"

    rc = 0
    results = []
    for cert, want in (("client", True), (None, False), ("intruder", False)):
        ok, why = attempt(cert)
        good = ok == want
        rc |= 0 if good else 1
        results.append(f"{cert or 'no certificate'}: {why}"
                       + ("" if good else " (WRONG)"))
    stop.set()
    srv.close()
    print("; ".join(results))
    return rc


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def _aggregate(rows):
    """Mean over repeats of one (label, streams) cell."""
    ok = [r for r in rows if not r.get("error")]
    if not ok:
        return {"error": rows[-1].get("error", "failed")}
    gbps = statistics.mean(r["bps"] / 1e9 for r in ok)
    agg = {"gbps": gbps, "n": len(ok), "cpu": None, "eff": None,
           "cpu_parts": None, "core_busy": {}}
    for c in ok[0].get("core_busy", {}):
        vals = [r["core_busy"][c] for r in ok if c in r.get("core_busy", {})]
        if vals:
            agg["core_busy"][c] = statistics.mean(vals)
    if all(r["cpu_s"] is not None for r in ok):
        # CPU % over the measured transfer interval; Gbit/s per CPU is then
        # simply bits forwarded per CPU-second of proxy time.
        cpu_s = sum(r["cpu_s"] for r in ok)
        secs = sum(r["seconds"] for r in ok)
        bits = sum(r["bytes"] * 8 for r in ok)
        agg["cpu"] = 100.0 * cpu_s / secs
        agg["eff"] = (bits / 1e9) / cpu_s if cpu_s > 0 else None
        agg["cpu_parts"] = _aggregate_parts(ok, secs)
    return agg


def _aggregate_parts(ok, secs):
    """CPU % of each process of a double proxy, or None."""
    if not all(r.get("cpu_parts") for r in ok):
        return None
    n = len(ok[0]["cpu_parts"])
    if any(len(r["cpu_parts"]) != n for r in ok):
        return None
    return [100.0 * sum(r["cpu_parts"][i] for r in ok) / secs
            for i in range(n)]


def _fmt(x, spec, suffix=""):
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def _read_rows(path):
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    return rows


def _core_cols(args):
    core_cols = []  # (core, label)
    for c, name in ((args.proxy_core, "proxy"), (args.load_core, "load")):
        if c is not None:
            core_cols.append((str(c), f"{name} core busy %"))
    return core_cols


def _suspect_runs(cells, args, describe):
    """'<label> <what> run i: why' for each suspect run of cells."""
    pc = None if args.proxy_core is None else str(args.proxy_core)
    shared = args.proxy_core == args.load_core
    out = []
    for (lb, key), rs in cells.items():
        for i, r in enumerate(rs, 1):
            why = None if r.get("error") else _suspect(r, pc, shared)
            if why:
                out.append(f"{lb} {describe(key)} run {i}: {why}")
    return out


def _doc_head(args):
    doc = []
    if args.title:
        doc += [f"# {args.title}", ""]
    for kv in args.meta or []:
        k, _, v = kv.partition("=")
        doc.append(f"- **{k}**: {v}")
    if args.meta:
        doc.append("")
    return doc


def _write_doc(args, doc):
    text = "\n".join(doc)
    os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
    with open(args.md, "w") as f:
        f.write(text)


def _tcp_table(rows, args, name=None, parts=None):
    """The iperf3 table.  name(label) -> what the first column shows;
    parts: headers of per-process CPU % columns (a double proxy).
    Returns (table, peers, core_cols, failed, suspect, agg)."""
    name = name or (lambda lb: lb)
    labels, streams = [], []
    cells = {}
    for r in rows:
        if r["label"] not in labels:
            labels.append(r["label"])
        if r["streams"] not in streams:
            streams.append(r["streams"])
        cells.setdefault((r["label"], r["streams"]), []).append(r)
    agg = {k: _aggregate(v) for k, v in cells.items()}

    base = args.baseline
    peers = [lb for lb in labels if lb != base] if base in labels else []

    header = ["proxy" if parts is None else "proxy pair", "streams", "Gbit/s",
              "proxy CPU %"]
    header += list(parts or [])
    header += ["Gbit/s per CPU"]
    core_cols = _core_cols(args)
    header += [h for _, h in core_cols]
    header += [f"{base} ÷ {p} (Gbit/s)" if p == "direct"
               else f"{base} ÷ {p} (Gbit/s · per-CPU)" for p in peers]
    body = []
    for s in streams:
        for lb in labels:
            a = agg.get((lb, s))
            if a is None:
                continue
            if "error" in a:
                body.append([name(lb), str(s), "FAILED"]
                            + [""] * (len(header) - 3))
                continue
            line = [name(lb), str(s), _fmt(a["gbps"], ".2f"),
                    _fmt(a["cpu"], ".0f", "%")]
            for i in range(len(parts or [])):
                v = a["cpu_parts"][i] if a["cpu_parts"] else None
                line.append(_fmt(v, ".0f", "%"))
            line.append(_fmt(a["eff"], ".2f"))
            line += [_fmt(a["core_busy"].get(c), ".0f", "%") for c, _ in core_cols]
            for p in peers:
                pa = agg.get((p, s))
                if lb != base or pa is None or "error" in pa:
                    line.append("")
                    continue
                thr = a["gbps"] / pa["gbps"] if pa["gbps"] else None
                cell = _fmt(thr, ".2f", "×")
                if a["eff"] and pa["eff"]:
                    cell += f" · {a['eff'] / pa['eff']:.2f}×"
                line.append(cell)
            body.append(line)
    failed = sorted({f"{lb} P={s}: {r['error']}" for (lb, s), rs in cells.items()
                     for r in rs if r.get("error")})
    suspect = _suspect_runs(cells, args, lambda s: f"P={s}")
    return _md_table(header, body), peers, core_cols, failed, suspect, agg


def table_tcp(args):
    rows = _read_rows(args.raw)
    tbl, peers, core_cols, _, _, agg = _tcp_table(rows, args)
    base = args.baseline

    doc = _doc_head(args)
    doc += [tbl, ""]
    if peers:
        doc += [
            f"Ratios (on {base} rows): {base} Gbit/s ÷ peer Gbit/s, then "
            f"{base} Gbit/s-per-CPU ÷ peer Gbit/s-per-CPU, at the same stream "
            "count. >1× means ringway is better. `direct` has no proxy, so "
            "only the throughput ratio applies (the fraction of the "
            "no-proxy ceiling).",
            "",
        ]
    doc += [
        "proxy CPU % = proxy process tree utime+stime (all threads) ÷ "
        "iperf3 measured interval; Gbit/s per CPU = Gbit/s ÷ (CPU % / 100) "
        "= Gbit forwarded per proxy CPU-second.",
        "",
    ]
    if core_cols:
        doc += [
            "core busy % = non-idle time (user+nice+system+irq+softirq; "
            "iowait counts as idle) of the proxy's core and of the load "
            "generator's core, from /proc/stat, whoever ran there. A proxy "
            "well under 100% with the load core near 100% is load-bound: "
            "the iperf3 core, not the proxy, limited Gbit/s.",
            "",
        ]
    _write_doc(args, doc)
    print(tbl)
    return 0 if all("error" not in a for a in agg.values()) else 1


SCENARIOS = {
    # key: (table label, description for the notes)
    "small": ("keep-alive /small", "`wrk -t1 -c64 /small`, keep-alive, 12-byte body"),
    "1m": ("keep-alive /1m", "`wrk -t1 -c16 /1m`, keep-alive, 1 MiB body"),
    "close": ("close /small", "`wrk -t1 -c64 -H 'Connection: close' /small`, "
              "a new connection per request"),
}

# MODE=tls (https://127.0.0.1:18443).
TLS_SCENARIOS = {
    "small": ("keep-alive /small", "`wrk -t1 -c64 https://…/small`, "
              "keep-alive, 12-byte body (64 handshakes at the start, then "
              "only record encryption)"),
    "1m": ("keep-alive /1m", "`wrk -t1 -c16 https://…/1m`, keep-alive, "
           "1 MiB body"),
    "close": ("close /small, full handshake",
              "`wrk -t1 -c64 -H 'Connection: close' https://…/small` with "
              "session reuse turned off in wrk (lib/wrk-no-resume.c): a new "
              "connection and a full TLS 1.3 handshake (certificate signed by "
              "the proxy, X25519) per request"),
    "resume": ("close /small, resumed",
               "the same, but wrk offers the session from its previous "
               "connection (its default): a TLS 1.3 PSK resumption (with "
               "X25519) per request wherever the proxy issued a ticket, a full "
               "handshake where it did not"),
}


def _aggregate_http(rows):
    """Combine the repeats of one (label, scenario) cell.

    req/s and latency percentiles: mean over repeats; non-2xx and socket
    errors: summed; CPU: total proxy CPU-seconds ÷ total measured seconds.
    """
    ok = [r for r in rows if not r.get("error")]
    if not ok:
        return {"error": rows[-1].get("error", "failed")}
    agg = {
        "n": len(ok),
        "rps": statistics.mean(r["rps"] for r in ok),
        "p50": statistics.mean(r["p50_ms"] for r in ok),
        "p99": statistics.mean(r["p99_ms"] for r in ok),
        "p999": statistics.mean(r["p999_ms"] for r in ok),
        "non2xx": sum(r["non2xx"] for r in ok),
        "sock": {k: sum(r["sock_errors"][k] for r in ok)
                 for k in ("connect", "read", "write", "timeout")},
        "cpu": None, "eff": None, "core_busy": {},
    }
    for c in ok[0].get("core_busy", {}):
        vals = [r["core_busy"][c] for r in ok if c in r.get("core_busy", {})]
        if vals:
            agg["core_busy"][c] = statistics.mean(vals)
    if all(r["cpu_s"] is not None for r in ok):
        cpu_s = sum(r["cpu_s"] for r in ok)
        secs = sum(r["seconds"] for r in ok)
        agg["cpu"] = 100.0 * cpu_s / secs
        # = req/s ÷ CPU fraction: requests served per proxy CPU-second.
        agg["eff"] = sum(r["requests"] for r in ok) / cpu_s if cpu_s > 0 else None
    return agg


def _fmt_errors(sock):
    total = sum(sock.values())
    if not total:
        return "0"
    return f"{total} (" + ", ".join(
        f"{k} {v}" for k, v in sock.items() if v) + ")"


def _md_table(header, body):
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]

    def md_row(cols):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"

    out = [md_row(header),
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [md_row(b) for b in body]
    return "\n".join(out)


def _http_table(rows, args, scenarios):
    """The wrk table.  Returns (table, peers, core_cols, failed, suspect,
    scens, agg)."""
    labels, scens = [], []
    cells = {}
    for r in rows:
        if r["label"] not in labels:
            labels.append(r["label"])
        if r["scenario"] not in scens:
            scens.append(r["scenario"])
        cells.setdefault((r["label"], r["scenario"]), []).append(r)
    agg = {k: _aggregate_http(v) for k, v in cells.items()}

    base = args.baseline
    peers = [lb for lb in labels if lb != base] if base in labels else []

    header = ["scenario", "proxy", "req/s", "p50 ms", "p99 ms", "p99.9 ms",
              "non-2xx", "socket errors", "proxy CPU %", "req per CPU-s"]
    core_cols = _core_cols(args)
    header += [h for _, h in core_cols]
    header += [f"{base} ÷ {p} (req/s)" if p == "direct"
               else f"{base} ÷ {p} (req/s · per-CPU)" for p in peers]
    body = []
    for s in scens:
        name = scenarios.get(s, (s, s))[0]
        for lb in labels:
            a = agg.get((lb, s))
            if a is None:
                continue
            if "error" in a:
                body.append([name, lb, "FAILED"]
                            + [""] * (len(header) - 3))
                continue
            line = [name, lb, _fmt(a["rps"], ".0f"), _fmt(a["p50"], ".2f"),
                    _fmt(a["p99"], ".2f"), _fmt(a["p999"], ".2f"),
                    str(a["non2xx"]), _fmt_errors(a["sock"]),
                    _fmt(a["cpu"], ".0f", "%"), _fmt(a["eff"], ".0f")]
            line += [_fmt(a["core_busy"].get(c), ".0f", "%") for c, _ in core_cols]
            for p in peers:
                pa = agg.get((p, s))
                if lb != base or pa is None or "error" in pa:
                    line.append("")
                    continue
                thr = a["rps"] / pa["rps"] if pa["rps"] else None
                cell = _fmt(thr, ".2f", "×")
                if a["eff"] and pa["eff"]:
                    cell += f" · {a['eff'] / pa['eff']:.2f}×"
                line.append(cell)
            body.append(line)
    failed = sorted({f"{lb} {s}: {r['error']}" for (lb, s), rs in cells.items()
                     for r in rs if r.get("error")})
    suspect = _suspect_runs(cells, args,
                            lambda s: scenarios.get(s, (s,))[0])
    return _md_table(header, body), peers, core_cols, failed, suspect, scens, agg


def _http_notes(base, peers, core_cols, load_what):
    doc = []
    if peers:
        doc += [
            f"Ratios (on {base} rows): {base} req/s ÷ peer req/s, then "
            f"{base} req-per-CPU-s ÷ peer req-per-CPU-s, in the same "
            "scenario. >1× means ringway is better. `direct` has no proxy, "
            "so only the req/s ratio applies (the fraction of the no-proxy "
            "ceiling).",
            "",
        ]
    doc += [
        "Latency percentiles are wrk's (`latency:percentile()` in "
        "lib/latency.lua), the mean over repeats. non-2xx is wrk's "
        "\"Non-2xx or 3xx responses\" count (status >= 400); socket errors "
        "are wrk's connect/read/write/timeout errors (timeout: no response "
        "within 2 s); both summed over repeats.",
        "",
        "proxy CPU % = proxy process tree utime+stime (all threads) ÷ wrk's "
        "measured interval; req per CPU-s = req/s ÷ (CPU % / 100) = "
        "requests served per proxy CPU-second.",
        "",
    ]
    if core_cols:
        doc += [
            "core busy % = non-idle time (user+nice+system+irq+softirq; "
            "iowait counts as idle) of the proxy's core and of the load "
            f"core ({load_what}), from /proc/stat, whoever ran "
            "there. A proxy well under 100% with the load core near 100% is "
            "load-bound: wrk and the upstream, not the proxy, limited req/s.",
            "",
        ]
    return doc


def _failed_suspect_notes(failed, suspect):
    doc = []
    if failed:
        doc += ["Failed runs:", ""] + [f"- {f}" for f in failed] + [""]
    if suspect:
        doc += ["Suspect runs (included above; other work on the proxy core "
                "or hypervisor steal > 5%):", ""] + [f"- {x}" for x in suspect] + [""]
    return doc


def table_http(args):
    rows = _read_rows(args.raw)
    tbl, peers, core_cols, failed, suspect, scens, agg = _http_table(
        rows, args, SCENARIOS)
    base = args.baseline
    doc = _doc_head(args)
    doc += [tbl, ""]
    doc += _failed_suspect_notes(failed, suspect)
    doc += ["Scenarios: " + "; ".join(
        f"**{SCENARIOS[s][0]}** = {SCENARIOS[s][1]}" for s in scens
        if s in SCENARIOS) + f"; each for the run's duration, repeats "
        "averaged.", ""]
    doc += _http_notes(base, peers, core_cols, "wrk + upstream nginx")
    _write_doc(args, doc)
    print(tbl)
    return 0 if all("error" not in a for a in agg.values()) else 1


def table_tls(args):
    """MODE=tls: the double proxy (iperf3, rows with part=mtls) and HTTPS
    (wrk, rows with part=https), one table each, in one document."""
    rows = _read_rows(args.raw)
    mtls = [r for r in rows if r.get("part") == "mtls"]
    https = [r for r in rows if r.get("part") == "https"]
    base = args.baseline
    doc = _doc_head(args)
    printed = []
    ok = True
    if mtls:
        tbl, peers, core_cols, failed, suspect, agg = _tcp_table(
            mtls, args, name=lambda lb: lb if lb == "direct" else f"{lb}⇄{lb}",
            parts=("A CPU %", "B CPU %"))
        ok &= all("error" not in a for a in agg.values())
        printed.append("Double proxy, mutual TLS between the proxies "
                       "(iperf3):\n\n" + tbl)
        doc += ["## Double proxy: iperf3 through A (plain in, mTLS out) and "
                "B (mTLS in, plain out)", "", tbl, ""]
        doc += _failed_suspect_notes(failed, suspect)
        if peers:
            doc += [
                f"Ratios (on {base} rows): {base}⇄{base} Gbit/s ÷ peer pair "
                f"Gbit/s, then Gbit/s-per-CPU ÷ peer pair Gbit/s-per-CPU, at "
                "the same stream count. >1× means ringway is better. For "
                "`direct` (no proxy) only the throughput ratio applies.",
                "",
            ]
        doc += [
            "proxy CPU % = utime+stime of both proxy processes (A and B, "
            "all threads, both pinned to the proxy core) ÷ iperf3's measured "
            "interval; A CPU % and B CPU % are each process's share. Gbit/s "
            "per CPU = Gbit/s ÷ (proxy CPU % / 100) = Gbit carried through "
            "both proxies per proxy CPU-second. The two proxies share one "
            "core, so the pair is CPU-bound at 100%.",
            "",
        ]
        if core_cols:
            doc += [
                "core busy % = non-idle time of the proxy core (A and B) and "
                "of the load core (iperf3 client and server), from "
                "/proc/stat, whoever ran there.",
                "",
            ]
    if https:
        tbl, peers, core_cols, failed, suspect, scens, agg = _http_table(
            https, args, TLS_SCENARIOS)
        ok &= all("error" not in a for a in agg.values())
        printed.append("HTTPS (wrk, TLS terminated by the proxy):\n\n" + tbl)
        doc += ["## HTTPS: wrk → proxy (TLS termination) → plain HTTP to the "
                "nginx origin", "", tbl, ""]
        doc += _failed_suspect_notes(failed, suspect)
        doc += ["Scenarios: " + "; ".join(
            f"**{TLS_SCENARIOS[s][0]}** = {TLS_SCENARIOS[s][1]}" for s in scens
            if s in TLS_SCENARIOS) + "; each for the run's duration, repeats "
            "averaged.", ""]
        doc += _http_notes(base, peers, core_cols, "wrk + upstream nginx")
    _write_doc(args, doc)
    print("\n\n".join(printed))
    return 0 if ok else 1


def table(args):
    if args.mode == "http":
        return table_http(args)
    if args.mode == "tls":
        return table_tls(args)
    return table_tcp(args)


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd_name", required=True)

    p = sub.add_parser("listening")
    p.add_argument("port", type=int)
    p = sub.add_parser("tree")
    p.add_argument("pid", type=int)
    p = sub.add_parser("alive")
    p.add_argument("pid", type=int)
    p = sub.add_parser("cputime")
    p.add_argument("pid", type=int)
    p = sub.add_parser("affinity")
    p.add_argument("pid", type=int)
    p.add_argument("cpulist")

    p = sub.add_parser("measure")
    p.add_argument("--tool", choices=("iperf3", "wrk"), default="iperf3")
    p.add_argument("--label", required=True)
    p.add_argument("--streams", type=int, help="iperf3 -P (tool iperf3)")
    p.add_argument("--scenario", help="HTTP scenario name (tool wrk)")
    p.add_argument("--min-body", type=int, default=0,
                   help="warn if responses average fewer bytes (tool wrk)")
    p.add_argument("--pid", type=int, action="append",
                   help="proxy PID (repeat for a double proxy: CPU summed)")
    p.add_argument("--field", action="append",
                   help="K=V added to the JSON line")
    p.add_argument("--suspect", action="store_true",
                   help="iperf3: warn about suspect runs, as for wrk")
    p.add_argument("--out", "--json", dest="out", required=True,
                   help="where the client's stdout goes")
    p.add_argument("--append", required=True)
    p.add_argument("--cores", default="",
                   help="comma-separated cores whose busy %% to record; "
                        "the first is the proxy's")
    p.add_argument("cmd", nargs=argparse.REMAINDER)

    p = sub.add_parser("probe")
    p.add_argument("url")
    p.add_argument("--length", type=int)
    p.add_argument("--body")
    p.add_argument("--cafile", help="https: trust this CA (PEM)")

    p = sub.add_parser("stats")
    p.add_argument("url")
    p.add_argument("--save", required=True)
    p.add_argument("--since")
    p.add_argument("--match")

    p = sub.add_parser("mtls-check")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--certs", required=True)
    p.add_argument("--server-name", default="server.ringway.test")

    p = sub.add_parser("table")
    p.add_argument("raw")
    p.add_argument("md")
    p.add_argument("--mode", choices=("tcp", "http", "tls"), default="tcp")
    p.add_argument("--title")
    p.add_argument("--meta", action="append")
    p.add_argument("--baseline", default="ringway")
    p.add_argument("--proxy-core", type=int)
    p.add_argument("--load-core", type=int)

    args = ap.parse_args()
    if args.cmd_name == "listening":
        return 0 if is_listening(args.port) else 1
    if args.cmd_name == "tree":
        print("\n".join(map(str, proc_tree(args.pid))))
        return 0
    if args.cmd_name == "alive":
        return 0 if is_alive(args.pid) else 1
    if args.cmd_name == "cputime":
        print(f"{tree_cpu_seconds(args.pid):.2f}")
        return 0
    if args.cmd_name == "affinity":
        return check_affinity(args.pid, args.cpulist)
    if args.cmd_name == "measure":
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
        if not args.cmd:
            ap.error("measure: missing command after --")
        if args.tool == "wrk" and not args.scenario:
            ap.error("measure --tool wrk: --scenario is required")
        return measure(args)
    if args.cmd_name == "probe":
        return probe(args)
    if args.cmd_name == "table":
        return table(args)
    if args.cmd_name == "stats":
        return stats(args)
    if args.cmd_name == "mtls-check":
        return mtls_check(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
