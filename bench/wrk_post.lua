-- wrk script: POST a chat completion body; prints the run's figures as one JSON line.
-- BENCH_BODY: the JSON body; BENCH_HEADERS: extra headers, one "Name: value" per line;
-- BENCH_VARY (set): "{n}" in the body is replaced by the request's number (1, 2, ...).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local extra = os.getenv("BENCH_HEADERS") or ""
for line in extra:gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then wrk.headers[name] = value end
end

local vary = os.getenv("BENCH_VARY")
if vary and vary ~= "" then
  local n = 0
  request = function()
    n = n + 1
    local body = (wrk.body:gsub("{n}", tostring(n)))
    return wrk.format(nil, nil, nil, body)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
