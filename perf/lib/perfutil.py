#!/usr/bin/env python3
"""Small helpers for perf/run.sh and perf/flamegraph.sh (stdlib only).

Subcommands:
  listening PORT              exit 0 iff something LISTENs on TCP PORT
                              (checked in /proc/net/tcp{,6}; no connection
                              is made, so nothing reaches the upstream)
  tree PID                    print PID and all its live descendants
  cputime PID                 print CPU seconds (utime+stime, all threads)
                              used so far by PID's process tree
  affinity PID CPULIST        warn on stderr about threads in PID's tree
                              allowed to run outside CPULIST
  measure --label L --streams N [--pid PID] --json FILE --append RAW -- CMD...
                              run CMD (an `iperf3 -J` client), sample the
                              proxy tree's CPU time around it and append
                              one JSON line of results to RAW
  table RAW MD [--title T] [--meta K=V ...] [--baseline NAME]
                              render RAW as a markdown table, print it and
                              write it to MD
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

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
    """{core: (busy_ticks, total_ticks)} from /proc/stat.

    busy = user+nice+system+irq+softirq; total adds idle, iowait and steal.
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
            out[core] = (user + nice + system + irq + softirq, sum(v))
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

def measure(args):
    cores = [int(c) for c in args.cores.split(",") if c != ""]
    cpu0 = tree_cpu_seconds(args.pid) if args.pid else None
    core0 = core_times(cores)
    t0 = time.monotonic()
    with open(args.json, "w") as out:
        rc = subprocess.call(args.cmd, stdout=out)
    wall = time.monotonic() - t0
    core1 = core_times(cores)
    cpu1 = tree_cpu_seconds(args.pid) if args.pid else None

    row = {
        "label": args.label,
        "streams": args.streams,
        "wall_s": round(wall, 3),
        "cpu_s": None if cpu0 is None else round(cpu1 - cpu0, 3),
        "error": None,
        # % busy of each listed core over the run, whoever used it.
        "core_busy": {
            str(c): round(100.0 * (core1[c][0] - core0[c][0])
                          / max(1, core1[c][1] - core0[c][1]), 1)
            for c in cores if c in core0 and c in core1
        },
    }
    try:
        with open(args.json) as f:
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
        msg += f", proxy CPU {100 * row['cpu_s'] / row['seconds']:.0f}%"
    if row["core_busy"]:
        msg += ", cores busy " + " ".join(
            f"{c}:{v:.0f}%" for c, v in row["core_busy"].items())
    print(msg, file=sys.stderr)
    return 0


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
           "core_busy": {}}
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
    return agg


def _fmt(x, spec, suffix=""):
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


def table(args):
    rows = []
    with open(args.raw) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))

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

    header = ["proxy", "streams", "Gbit/s", "proxy CPU %", "Gbit/s per CPU"]
    core_cols = []  # (core, label)
    for c, name in ((args.proxy_core, "proxy"), (args.load_core, "load")):
        if c is not None:
            core_cols.append((str(c), f"{name} core busy %"))
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
                line = ([lb, str(s), "FAILED", "", ""] + [""] * len(core_cols)
                        + [""] * len(peers))
                body.append(line)
                continue
            line = [lb, str(s), _fmt(a["gbps"], ".2f"),
                    _fmt(a["cpu"], ".0f", "%"), _fmt(a["eff"], ".2f")]
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

    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]

    def md_row(cols):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"

    out = [md_row(header),
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [md_row(b) for b in body]
    tbl = "\n".join(out)

    doc = []
    if args.title:
        doc += [f"# {args.title}", ""]
    for kv in args.meta or []:
        k, _, v = kv.partition("=")
        doc.append(f"- **{k}**: {v}")
    if args.meta:
        doc.append("")
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
    text = "\n".join(doc)
    os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
    with open(args.md, "w") as f:
        f.write(text)
    print(tbl)
    return 0 if all("error" not in a for a in agg.values()) else 1


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd_name", required=True)

    p = sub.add_parser("listening")
    p.add_argument("port", type=int)
    p = sub.add_parser("tree")
    p.add_argument("pid", type=int)
    p = sub.add_parser("cputime")
    p.add_argument("pid", type=int)
    p = sub.add_parser("affinity")
    p.add_argument("pid", type=int)
    p.add_argument("cpulist")

    p = sub.add_parser("measure")
    p.add_argument("--label", required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--json", required=True)
    p.add_argument("--append", required=True)
    p.add_argument("--cores", default="",
                   help="comma-separated cores whose busy %% to record")
    p.add_argument("cmd", nargs=argparse.REMAINDER)

    p = sub.add_parser("table")
    p.add_argument("raw")
    p.add_argument("md")
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
        return measure(args)
    if args.cmd_name == "table":
        return table(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
