-- wrk script: each request goes to one of 100,000 distinct users, in a fixed order.
-- usage: wrk -t1 -c64 -d5s -s scripts/users.lua http://127.0.0.1:7000
local n = 0
request = function()
  n = (n + 7919) % 100000
  return wrk.format("GET", "/v1/users/u" .. n .. "/whoami")
end
