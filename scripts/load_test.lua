-- wrk script for scripts/load_test.sh: POSTs raw JPEG bodies to /v1/captions, cycling through the
-- files listed (one path a line) in $IMAGES_LIST, and counts answers by status.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for path in io.lines(os.getenv("IMAGES_LIST")) do
    local f = assert(io.open(path, "rb"))
    table.insert(bodies, f:read("*all"))
    f:close()
  end
  -- Threads start at different images so that batches mix different pictures.
  index = math.random(#bodies)
  ok, busy, other = 0, 0, 0
end

function request()
  index = index % #bodies + 1
  return wrk.format("POST", nil, { ["Content-Type"] = "image/jpeg" }, bodies[index])
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 503 then
    busy = busy + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local ok_n, busy_n, other_n = 0, 0, 0
  for _, t in ipairs(threads) do
    ok_n = ok_n + t:get("ok")
    busy_n = busy_n + t:get("busy")
    other_n = other_n + t:get("other")
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT captions_per_s=%.2f ok=%d busy_503=%d other_status=%d "
    .. "socket_errors=%d timeouts=%d p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f max_ms=%.1f seconds=%.1f\n",
    ok_n / seconds, ok_n, busy_n, other_n, e.connect + e.read + e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, seconds))
end
