-- wrk script for the benchmark: POST the body file given after `--` on every request, and
-- count every response that is not a 200 carrying the marker given after it (default
-- "predictions"; "outputs" for V2 answers) (values are checked
-- separately by the harness's Python client). Prints one `BENCH {json}` line when done.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- wrk's own init calls this one, then formats the request once from wrk.method/body/headers.
function init(args)
  local file = assert(io.open(args[1], "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
  marker = '"' .. (args[2] or "predictions") .. '"'
  bad = 0
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, marker, 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local bad_total = 0
  for _, thread in ipairs(threads) do
    bad_total = bad_total + thread:get("bad")
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "bad": %d, '
      .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    bad_total, errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
