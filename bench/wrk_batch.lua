-- wrk script of `make bench` (bench/small.py): replays prebuilt HTTP requests and checks
-- every answer.  wrk -t T -c C -d S --latency -s wrk_batch.lua URL -- FILE STATUS ITEMS
--   FILE    requests as "<byte length>\n<raw HTTP/1.1 request>", one after the other
--   STATUS  the HTTP status every answer must have (207 service, 200 minimal app)
--   ITEMS   how many items of each answer must be "status":200 or "status":201
-- Thread t of T sends requests t, t+T, t+2T, ... of the file in turn (so no two requests in
-- flight update the same key). done() prints one JSON line that bench/small.py reads.

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   expected_status = tonumber(args[2])
   expected_items = tonumber(args[3])
   bad_status, bad_items = 0, 0
   reqs, counter = {}, 0
   local nthreads = tonumber(args[4])
   local f = assert(io.open(args[1], "rb"))
   local data = f:read("*a")
   f:close()
   local pos, n = 1, 0
   while pos <= #data do
      local nl = data:find("\n", pos, true)
      local len = tonumber(data:sub(pos, nl - 1))
      if n % nthreads == tid then
         reqs[#reqs + 1] = data:sub(nl + 1, nl + len)
      end
      n = n + 1
      pos = nl + 1 + len
   end
end

function request()
   counter = counter % #reqs + 1
   return reqs[counter]
end

function response(status, headers, body)
   if status ~= expected_status then
      bad_status = bad_status + 1
   else
      local _, ok = body:gsub('"status":20[01][,}]', "")
      if ok ~= expected_items then
         bad_items = bad_items + 1
      end
   end
end

function done(summary, latency, requests)
   local bs, bi = 0, 0
   for _, thread in ipairs(threads) do
      bs = bs + thread:get("bad_status")
      bi = bi + thread:get("bad_items")
   end
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"bad_status":%d,' ..
      '"bad_items":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      bs, bi, e.connect, e.read, e.write, e.timeout))
end
