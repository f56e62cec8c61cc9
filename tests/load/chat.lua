-- wrk script for chat completions: wrk -t2 -c8 -d10s -s tests/load/chat.lua http://127.0.0.1:8000/v1/chat/completions [-- stream]
-- (from the load-test recipe of the OpenAI API reference; tests/api/test_load.py runs it in CI)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local prompts, reqs, i = {"Hello", "Write a haiku", "Explain TCP"}, {}, 0
function init(args)
  local s = (args[1] == "stream") and ',"stream":true' or ""
  for k, p in ipairs(prompts) do
    reqs[k] = wrk.format(nil, nil, nil, string.format(
      '{"messages":[{"role":"user","content":"%s"}],"max_tokens":16,"temperature":0%s}', p, s))
  end
end
function request() i = i % #reqs + 1; return reqs[i] end
local non2xx = 0
function response(status, headers, body) if status ~= 200 then non2xx = non2xx + 1 end end
