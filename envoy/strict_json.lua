-- Refuse JSON request bodies with fields the target protobuf message does not have.
-- Envoy's grpc_json_transcoder drops unknown fields silently (envoyproxy/envoy#46623);
-- this filter runs before it. ROUTES and SCHEMAS are generated from the descriptor set by
-- envoy_config/strict_json.py and prepended to this file.

local function skip_ws(s, i)
  local _, e = s:find("^[ \t\r\n]*", i)
  return e + 1
end

local function parse_string(s, i)  -- s:sub(i, i) == '"'; returns the raw string and next index
  local j = i + 1
  local parts = {}
  while true do
    local c = s:sub(j, j)
    if c == "" then error("unterminated string") end
    if c == '"' then return table.concat(parts), j + 1 end
    if c == "\\" then
      parts[#parts + 1] = s:sub(j, j + 1)
      j = j + 2
    else
      parts[#parts + 1] = c
      j = j + 1
    end
  end
end

local check_value

local function check_object(s, i, schema, path)
  i = skip_ws(s, i + 1)
  if s:sub(i, i) == "}" then return i + 1 end
  while true do
    if s:sub(i, i) ~= '"' then error("expected a field name") end
    local key
    key, i = parse_string(s, i)
    i = skip_ws(s, i)
    if s:sub(i, i) ~= ":" then error("expected ':'") end
    local child = nil
    if schema ~= nil then
      child = schema[key]
      if child == nil then
        return nil, path .. key
      end
      if child == true then child = nil else child = SCHEMAS[child] end
    end
    local bad
    i, bad = check_value(s, skip_ws(s, i + 1), child, path .. key .. ".")
    if bad then return nil, bad end
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "}" then return i + 1 end
    if c ~= "," then error("expected ',' or '}'") end
    i = skip_ws(s, i + 1)
  end
end

local function check_array(s, i, schema, path)
  i = skip_ws(s, i + 1)
  if s:sub(i, i) == "]" then return i + 1 end
  while true do
    local bad
    i, bad = check_value(s, i, schema, path)
    if bad then return nil, bad end
    i = skip_ws(s, i)
    local c = s:sub(i, i)
    if c == "]" then return i + 1 end
    if c ~= "," then error("expected ',' or ']'") end
    i = skip_ws(s, i + 1)
  end
end

check_value = function(s, i, schema, path)
  local c = s:sub(i, i)
  if c == "{" then return check_object(s, i, schema, path) end
  if c == "[" then return check_array(s, i, schema, path) end
  if c == '"' then
    local _, j = parse_string(s, i)
    return j
  end
  local _, e = s:find("^[%w%.%+%-]+", i)  -- number, true, false, null
  if not e then error("unexpected character") end
  return e + 1
end

local function target(method, path)
  for _, route in ipairs(ROUTES) do
    if route[1] == method and path:match(route[2]) then return route[3] end
  end
  return nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local ctype = headers:get("content-type") or ""
  if not ctype:find("application/json", 1, true) then return end
  local method = headers:get(":method")
  local path = (headers:get(":path") or ""):gsub("%?.*$", "")
  local message = target(method, path)
  if message == nil then return end
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local text = body:getBytes(0, body:length())
  local ok, _, bad = pcall(check_value, text, skip_ws(text, 1), SCHEMAS[message], "")
  if ok and bad then
    -- Plain text: the local reply mapper turns it into the google.rpc.Status JSON body.
    handle:respond(
      {[":status"] = "400", ["content-type"] = "text/plain"},
      'unknown field "' .. bad .. '" in the request body'
    )
  end
  -- Malformed JSON (ok == false) is left to the transcoder, which reports it itself.
end
