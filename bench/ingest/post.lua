-- wrk script for the ingestion benchmark: POSTs Alertmanager webhook bodies, prints a JSON summary.
--
--   wrk -t2 -c8 -d15s --latency -s bench/ingest/post.lua URL -- MODE KEY TAG
--
-- MODE repeat: the same group and the same two firing alerts every time, as Alertmanager re-sends a
--   group at every group_interval / repeat_interval (the steady state of real traffic).
-- MODE churn: 50 groups per wrk thread, each post flipping its group between firing (a new episode,
--   so a new incident, linked as a recurrence) and resolved (the incident resolves): every post
--   changes something (the worst case).
-- KEY is the integration key (sent as a Bearer token); the bare endpoint ignores it. TAG makes the churn
-- group keys of one run differ from another's.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local mode, tag, counter = "repeat", "run", 0
local headers = {["Content-Type"] = "application/json", ["User-Agent"] = "Alertmanager/0.25.0"}

local function alert(status, instance, startsAt, endsAt)
  return string.format(
    '{"status":"%s","labels":{"alertname":"HighErrorRate","instance":"%s","severity":"critical"},' ..
    '"annotations":{"summary":"Error rate above 5%% on %s","description":"5xx ratio is 7.3%%"},' ..
    '"startsAt":"%s","endsAt":"%s","generatorURL":"http://prometheus:9090/graph?g0.expr=x",' ..
    '"fingerprint":"%s"}',
    status, instance, instance, startsAt, endsAt, instance)
end

local function body(groupKey, status, alerts)
  return string.format(
    '{"receiver":"incidents","status":"%s","alerts":[%s],"groupLabels":{"alertname":"HighErrorRate"},' ..
    '"commonLabels":{"alertname":"HighErrorRate","severity":"critical"},"commonAnnotations":{},' ..
    '"externalURL":"http://alertmanager:9093","version":"4","groupKey":"%s","truncatedAlerts":0}',
    status, table.concat(alerts, ","), groupKey)
end

local zero = "0001-01-01T00:00:00Z"
local repeat_body = body('{}:{alertname=\\"HighErrorRate\\"}', "firing", {
  alert("firing", "web-1", "2026-01-01T00:00:00.123456789Z", zero),
  alert("firing", "web-2", "2026-01-01T00:00:00.123456789Z", zero),
})

function init(args)
  mode = args[1] or "repeat"
  if args[2] then headers["Authorization"] = "Bearer " .. args[2] end
  tag = args[3] or tag
end

function request()
  if mode == "repeat" then
    return wrk.format("POST", nil, headers, repeat_body)
  end
  counter = counter + 1
  local group = counter % 50
  local round = math.floor(counter / 50)
  local episode = math.floor(round / 2)
  local startsAt = string.format("2026-01-01T00:00:00.%06dZ", episode)
  local key = string.format("churn-%s-%d-%d", tag, tid, group)
  if round % 2 == 0 then
    return wrk.format("POST", nil, headers, body(key, "firing", {alert("firing", key, startsAt, zero)}))
  end
  local endsAt = string.format("2026-01-01T00:00:01.%06dZ", episode)
  return wrk.format("POST", nil, headers, body(key, "resolved", {alert("resolved", key, startsAt, endsAt)}))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f, "errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d, ' ..
    '"errors_timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
