-- HyperInfer quota: reserve one request's share of every limit, atomically.
--
-- GCRA per limit (RPM: n = 1, TPM: n = tokens). The theoretical arrival time
-- TAT = a + r/N microseconds is stored exactly as the string "a:r" (0 <= r < N),
-- where one unit of work costs P/N microseconds (the rate reduced by gcd). The
-- bucket "level" is (TAT - now) expressed in units of 1/N microseconds; a request
-- of n units passes iff level + n*P <= C*P (C: capacity = the limit, the burst).
-- Budgets: hash <base>:<period id> with fields spent (posted by the quota service
-- from PostgreSQL) and held (outstanding reservations); passes iff
-- spent + held + cost <= cap. All pass or nothing is written.
--
-- KEYS: 1 key rpm, 2 team rpm, 3 key tpm, 4 team tpm, 5 key budget base,
--       6 team budget base, 7 team ready marker, 8 team pending index, 9 reservation
-- ARGV: 1 request id, 2 tokens, 3 cost micros, 4 flags (1: dry run, 2: budget gate),
--       5 reservation ttl (us), 6 the limits, one space-separated string built once per
--       config snapshot: key rpm N P C, team rpm N P C, key tpm N P C, team tpm N P C
--       (N = -1: no limit), key budget cap (-1: none), key period (d/w/m), team
--       budget cap, team period; 7 (tests only) now in us
-- Reply: {status, reason, retry_us, now_us, lim_req, rem_req, reset_req_us,
--         lim_tok, rem_tok, reset_tok_us, budget_remaining, settleable}
--   status 1 allowed, 0 denied, 2 duplicate (already reserved), 3 budgets not loaded
--   reason 0 none, 1/2 rpm key/team, 3/4 tpm key/team, 5/6 budget key/team
--   retry_us -1: never passes at these limits

local now
if ARGV[7] and ARGV[7] ~= '' then
  now = tonumber(ARGV[7])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local DAY = 86400000000
local KEEP_MS = 8 * 86400000

local function divmod(a, b)
  local q = math.floor(a / b)
  local m = a - q * b
  if m < 0 then q = q - 1; m = m + b elseif m >= b then q = q + 1; m = m - b end
  return q, m
end

local function ceildiv(a, b)
  local q, m = divmod(a, b)
  if m > 0 then q = q + 1 end
  return q
end

local function fmt(x) return string.format('%d', x) end

-- civil date of a day number (days since 1970-01-01), H. Hinnant's algorithm
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function ymd(day)
  local y, m, d = civil(day)
  return string.format('%04d%02d%02d', y, m, d)
end

-- calendar-aligned UTC period: its id and its end (us)
local function period(code, t)
  local day = math.floor(t / DAY)
  if code == 'd' then return 'd' .. ymd(day), (day + 1) * DAY end
  if code == 'w' then
    local monday = day - (day + 3) % 7
    return 'w' .. ymd(monday), (monday + 7) * DAY
  end
  local y, m = civil(day)
  local ny, nm = y, m + 1
  if nm > 12 then ny = y + 1; nm = 1 end
  return 'm' .. string.format('%04d%02d', y, m), days_from_civil(ny, nm, 1) * DAY
end

local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local flags = tonumber(ARGV[4])
local dry, gate = flags % 2 == 1, math.floor(flags / 2) % 2 == 1
local spec = {}
for word in string.gmatch(ARGV[6], '%S+') do spec[#spec + 1] = word end
local kcap, tcap = tonumber(spec[13]), tonumber(spec[15])
local has_budget = kcap >= 0 or tcap >= 0
local settleable = has_budget or tonumber(spec[7]) >= 0 or tonumber(spec[10]) >= 0

local function reply(status, reason, retry)
  return {status, reason, retry, now, -1, -1, 0, -1, -1, 0, -1, settleable and 1 or 0}
end

if has_budget and gate and redis.call('EXISTS', KEYS[7]) == 0 then
  return reply(3, 0, 0)
end
if settleable and not dry and redis.call('EXISTS', KEYS[9]) == 1 then
  return reply(2, 0, 0)
end

local denied, wait, why = false, 0, 0
local function deny(w, reason)
  if not denied or wait >= 0 and (w < 0 or w > wait) then wait, why = w, reason end
  denied = true
end

-- GCRA limits
local units = {1, 1, tokens, tokens}
local gcra = {}
for i = 1, 4 do
  local base = 3 * i - 2
  local N = tonumber(spec[base])
  if N >= 0 then
    local P, C, n = tonumber(spec[base + 1]), tonumber(spec[base + 2]), units[i]
    local a, r = now, 0
    local v = redis.call('GET', KEYS[i])
    if v then
      local s = string.find(v, ':', 1, true)
      a, r = tonumber(string.sub(v, 1, s - 1)), tonumber(string.sub(v, s + 1))
      if a < now then a, r = now, 0 end
    end
    local level = (a - now) * N + r
    gcra[i] = {N = N, P = P, C = C, n = n, a = a, r = r, level = level}
    if n > C or (N == 0 and n > 0) then
      deny(-1, i)
    else
      local need = level + n * P - C * P
      if need > 0 then deny(ceildiv(need, N), i) end
    end
  end
end

-- budgets
local budgets = {}
local function check_budget(slot, cap, code, reason)
  if cap < 0 then return end
  local pid, pend = period(code, now)
  local key = KEYS[slot] .. ':' .. pid
  local f = redis.call('HMGET', key, 'spent', 'held')
  local used = (tonumber(f[1]) or 0) + (tonumber(f[2]) or 0)
  budgets[#budgets + 1] = {key = key, pend = pend, left = cap - used - cost}
  if cost > cap then deny(-1, reason)
  elseif used + cost > cap then deny(pend - now, reason) end
end
check_budget(5, kcap, spec[14], 5)
check_budget(6, tcap, spec[16], 6)

-- headers: the tighter of key and team for requests and for tokens
local function report(i, j, spend)
  local lim, rem, reset = -1, -1, 0
  for _, k in ipairs({i, j}) do
    local g = gcra[k]
    if g then
      local level = g.level + spend * g.n * g.P
      local left = g.C * g.P - level
      local rk = left >= 0 and divmod(left, g.P) or 0
      local reset_k = g.N > 0 and ceildiv(level, g.N) or 0
      if rem < 0 or rk < rem then lim, rem, reset = g.C, rk, reset_k end
    end
  end
  return lim, rem, reset
end

local function budget_left()
  local left = -1
  for _, b in ipairs(budgets) do
    local l = b.left
    if denied then l = l + cost end
    if l < 0 then l = 0 end
    if left < 0 or l < left then left = l end
  end
  return left
end

local spend = denied and 0 or 1
local lr, rr, sr = report(1, 2, spend)
local lt, rt, st = report(3, 4, spend)
local out = {denied and 0 or 1, why, denied and wait or 0, now, lr, rr, sr, lt, rt, st,
  budget_left(), settleable and 1 or 0}
if denied or dry then return out end

for i = 1, 4 do
  local g = gcra[i]
  if g then
    local q, m = divmod(g.r + g.n * g.P, g.N > 0 and g.N or 1)
    local tat = g.a + q
    redis.call('SET', KEYS[i], fmt(tat) .. ':' .. fmt(m), 'PX', fmt(ceildiv(tat - now, 1000) + 1000))
  end
end
for _, b in ipairs(budgets) do
  -- the hash lives until 8 days after its period; set when it starts holding (new hash)
  if redis.call('HINCRBY', b.key, 'held', fmt(cost)) == cost then
    redis.call('PEXPIREAT', b.key, fmt(math.floor(b.pend / 1000) + KEEP_MS))
  end
end
if settleable then
  local ttl = tonumber(ARGV[5])
  local function field(i) return gcra[i] and KEYS[i] or '' end
  local function rate(i) return gcra[i] and fmt(gcra[i].N) or '0' end
  local function per(i) return gcra[i] and fmt(gcra[i].P) or '0' end
  local kb, tb = '', ''
  if kcap >= 0 then kb = budgets[1].key end
  if tcap >= 0 then tb = budgets[#budgets].key end
  redis.call('HSET', KEYS[9], 'st', 'p', 'tk', fmt(tokens), 'c', fmt(cost),
    'kt', field(3), 'kn', rate(3), 'kp', per(3), 'tt', field(4), 'tn', rate(4), 'tp', per(4),
    'kb', kb, 'tb', tb)
  redis.call('PEXPIRE', KEYS[9], fmt(math.floor(ttl / 1000) + 86400000))
  redis.call('ZADD', KEYS[8], fmt(now + ttl), ARGV[1])
end
return out
