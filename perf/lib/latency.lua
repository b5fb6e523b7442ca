-- wrk script for perf/run.sh (MODE=http): no request/response hooks (wrk
-- keeps its fast static-request path); at the end print the latency
-- percentiles wrk's --latency table lacks (it stops at 99%) and the exact
-- counters, for perfutil.py to parse.  Latencies are in microseconds.
done = function(summary, latency, requests)
  for _, p in ipairs({50, 99, 99.9}) do
    io.write(string.format("perf-latency p%s %d\n", p, latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    "perf-summary requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout))
end
