-- wrk script of bench/peer.py: reads of ~100 stored secrets, writes to fresh paths, or both mixed 90/10, against
-- ScaiVault or OpenBao. Everything arrives in environment variables (a token on the command line would show in ps):
--   PEER_MODE        read | write | mixed
--   PEER_AUTH        "Authorization: Bearer <token>" or "X-Vault-Token: <token>", as "<name>: <value>"
--   PEER_READ_PATHS  path prefix of the stored secrets; "%03d" of 0..PEER_READ_COUNT-1 is appended
--   PEER_READ_COUNT  how many stored secrets
--   PEER_WRITE_PATH  path prefix of the fresh paths; "<thread>/<n>" is appended
-- and, optionally (bench/scale.py):
--   PEER_READ_FILE   a file of request paths, one a line: reads (and updates) take them in turn from a random
--                    starting line instead of PEER_READ_PATHS/PEER_READ_COUNT
--   PEER_LIST_FILE   a file of request paths (listings, e.g. "/v1/secrets?prefix=a/b/"), for PEER_MODE=list
-- PEER_MODE may then also be update (PUT a new version to the read paths) or list (GET the list paths).
-- done() prints one line "PEER_RESULT {json}" with the summary and a quantile grid of the latencies, which
-- bench/peer.py merges over rounds.

local counter = 0
local thread_id = 0
local mode, read_paths, read_count, write_path
local read_list, list_list, offset = nil, nil, 0
local auth_headers

local threads = {}

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local function lines(file_name)
  if file_name == nil or file_name == "" then return nil end
  local found = {}
  for line in io.lines(file_name) do
    if line ~= "" then table.insert(found, line) end
  end
  assert(#found > 0, "no paths in " .. file_name)
  return found
end

function init(args)
  mode = os.getenv("PEER_MODE")
  read_paths = os.getenv("PEER_READ_PATHS")
  read_count = tonumber(os.getenv("PEER_READ_COUNT"))
  write_path = os.getenv("PEER_WRITE_PATH")
  local name, value = string.match(os.getenv("PEER_AUTH"), "^([^:]+):%s*(.+)$")
  auth_headers = {[name] = value}
  read_list = lines(os.getenv("PEER_READ_FILE"))
  list_list = lines(os.getenv("PEER_LIST_FILE"))
  if read_list or list_list then
    -- every run starts somewhere else in the files, so a run does not find what the last one warmed up
    math.randomseed(os.time() + thread_id)
    offset = math.random(0, 1000000007)
  end
end

local function in_turn(list)
  return list[(offset + counter) % #list + 1]
end

local function read_path()
  if read_list then return in_turn(read_list) end
  return read_paths .. string.format("%03d", counter % read_count)
end

local function read_request()
  return wrk.format("GET", read_path(), auth_headers, nil)
end

local function put_request(path)
  local headers = {["Content-Type"] = "application/json"}
  for k, v in pairs(auth_headers) do headers[k] = v end
  local body = string.format('{"data": {"password": "peer-%024d"}}', counter)
  return wrk.format("PUT", path, headers, body)
end

local function write_request()
  return put_request(write_path .. thread_id .. "/" .. counter)
end

function request()
  counter = counter + 1
  if mode == "read" then
    return read_request()
  elseif mode == "write" then
    return write_request()
  elseif mode == "update" then
    return put_request(read_path())
  elseif mode == "list" then
    return wrk.format("GET", in_turn(list_list), auth_headers, nil)
  elseif counter % 10 == 0 then
    return write_request()
  else
    return read_request()
  end
end

local function grid()
  local qs = {}
  for q = 1, 99 do table.insert(qs, q) end
  for i = 1, 9 do table.insert(qs, 99 + i / 10) end
  for i = 1, 9 do table.insert(qs, 99.9 + i / 100) end
  return qs
end

function done(summary, latency, requests)
  local points = {string.format("[0, %d]", latency.min)}
  for _, q in ipairs(grid()) do
    table.insert(points, string.format("[%g, %d]", q, latency:percentile(q)))
  end
  table.insert(points, string.format("[100, %d]", latency.max))
  local e = summary.errors
  io.write(string.format(
    'PEER_RESULT {"duration_us": %d, "requests": %d, "errors": {"connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d}, "quantiles_us": [%s]}\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(points, ", ")))
end
