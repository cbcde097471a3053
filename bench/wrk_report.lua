-- Prints wrk's summary as one JSON line (wrk's own --latency table has no p95).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p75_us": %d, "p90_us": %d, ' ..
    '"p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, "stdev_us": %.1f, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max, latency.mean, latency.stdev,
    e.connect, e.read, e.write, e.status, e.timeout))
end
