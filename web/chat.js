// chat.js: the chat page's logic. It is an ordinary API client: GET v1/models for the model's
// name, POST v1/chat/completions streamed (stream_options.include_usage for the token counts),
// an AbortController for Stop (the server sees the connection close and aborts the request).
// Conversations, settings and the API key live in the browser's localStorage under "sluice.".
"use strict";

const $ = (id) => document.getElementById(id);
const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem("sluice." + key);
      return v === null ? fallback : JSON.parse(v);
    } catch (e) {
      return fallback;
    }
  },
  set(key, value) { localStorage.setItem("sluice." + key, JSON.stringify(value)); },
};

let chats = store.get("chats", []); // [{id, title, messages: [{role, content, stats, note}]}]
let currentId = store.get("current", null);
let apiKey = store.get("apiKey", "");
let model = null;
let running = null; // the AbortController of the reply being streamed

// Model output is shown as markdown; raw HTML in it is shown as text, never as markup.
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
marked.use({ renderer: { html: (html) => escapeHtml(typeof html === "string" ? html : html.text) } });

// ---- API

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey) h.Authorization = "Bearer " + apiKey;
  return h;
}

// Resolves when the dialog closes: saved, or dismissed with Escape (the next 401 asks again).
function askKey() {
  return new Promise((resolve) => {
    const dlg = $("key-dialog");
    if (dlg.open) return resolve();
    $("key-save").onclick = () => {
      apiKey = $("key-input").value.trim();
      store.set("apiKey", apiKey);
      $("forget-key").hidden = !apiKey;
      dlg.close();
    };
    dlg.onclose = () => resolve();
    dlg.showModal();
  });
}

async function loadModel() {
  for (;;) {
    let r;
    try {
      r = await fetch("v1/models", { headers: headers() });
    } catch (e) {
      setStatus("cannot reach the server: " + e.message);
      await new Promise((ok) => setTimeout(ok, 2000));
      continue;
    }
    if (r.status === 401) {
      await askKey();
      continue;
    }
    if (!r.ok) { // 503 while the model loads
      setStatus("waiting for the server (" + r.status + ")");
      await new Promise((ok) => setTimeout(ok, 1000));
      continue;
    }
    const card = (await r.json()).data[0];
    model = card.id;
    $("model").textContent = model;
    $("model").title = "context: " + card.max_model_len + " tokens";
    setStatus("");
    return;
  }
}

// Yields each parsed "data:" event of a text/event-stream body; stops at [DONE].
async function* sseEvents(body) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, end);
      buf = buf.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue; // ": keep-alive" comments
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

// ---- conversations

function currentChat() { return chats.find((c) => c.id === currentId) || null; }

function save() {
  store.set("chats", chats);
  store.set("current", currentId);
}

function newChat() {
  const chat = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "", messages: [] };
  chats.unshift(chat);
  currentId = chat.id;
  save();
  return chat;
}

function setStatus(text) { $("status").textContent = text; }

function fillMessage(el, m) {
  const content = el.querySelector(".content");
  if (m.role === "assistant") content.innerHTML = marked.parse(m.content || "");
  else content.textContent = m.content;
  el.querySelector(".stats").textContent = [m.stats, m.note].filter(Boolean).join(" · ");
}

function messageElement(m) {
  const el = document.createElement("div");
  el.className = "msg " + m.role;
  el.innerHTML = '<div class="content"></div><div class="stats"></div>';
  fillMessage(el, m);
  return el;
}

function render() {
  const list = $("chats");
  list.replaceChildren();
  for (const chat of chats) {
    const li = document.createElement("li");
    li.className = chat.id === currentId ? "chat current" : "chat";
    const open = document.createElement("button");
    open.className = "open";
    open.textContent = chat.title || "New chat";
    open.onclick = () => { if (!running) { currentId = chat.id; save(); render(); closeMenu(); } };
    const del = document.createElement("button");
    del.className = "delete";
    del.textContent = "×";
    del.setAttribute("aria-label", "Delete this chat");
    del.onclick = () => {
      if (running) return;
      chats = chats.filter((c) => c !== chat);
      if (currentId === chat.id) currentId = chats.length ? chats[0].id : null;
      save();
      render();
    };
    li.append(open, del);
    list.append(li);
  }
  const box = $("messages");
  box.replaceChildren(...(currentChat()?.messages || []).map(messageElement));
  box.scrollTop = box.scrollHeight;
}

// ---- one reply

function replyStats(usage, pieces, t0, tFirst, tEnd) {
  if (tFirst === null) return "";
  const out = usage ? usage.completion_tokens : pieces; // without usage (stopped): one token a chunk
  const parts = [usage ? `${usage.prompt_tokens} prompt + ${out} completion tokens` : `~${out} tokens`];
  if (out > 1 && tEnd > tFirst) parts.push(`${((out - 1) / ((tEnd - tFirst) / 1000)).toFixed(1)} tokens/s`);
  parts.push(`first token ${((tFirst - t0) / 1000).toFixed(2)} s`);
  return parts.join(" · ");
}

async function send() {
  const text = $("input").value.trim();
  if (!text || running || !model) return;
  const chat = currentChat() || newChat();
  if (!chat.title) chat.title = text.slice(0, 40);
  chat.messages.push({ role: "user", content: text });
  const reply = { role: "assistant", content: "" };
  chat.messages.push(reply);
  $("input").value = "";
  save();
  render();
  const el = $("messages").lastElementChild;

  const settings = readSettings();
  const history = chat.messages.slice(0, -1).map(({ role, content }) => ({ role, content }));
  if (settings.system) history.unshift({ role: "system", content: settings.system });
  const body = {
    model, messages: history, stream: true, stream_options: { include_usage: true },
    temperature: settings.temperature, max_tokens: settings.maxTokens,
  };
  running = new AbortController();
  $("send").hidden = true;
  $("stop").hidden = false;
  const t0 = performance.now();
  let tFirst = null, usage = null, pieces = 0, finish = null, drawn = false;
  const redraw = () => { drawn = false; fillMessage(el, reply); $("messages").scrollTop = $("messages").scrollHeight; };
  try {
    const r = await fetch("v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (!r.ok) {
      const err = await r.json().catch(() => null);
      if (r.status === 401) askKey();
      throw new Error(err?.error?.message || "HTTP " + r.status);
    }
    for await (const ev of sseEvents(r.body)) {
      if (ev.error) throw new Error(ev.error.message);
      if (ev.usage) usage = ev.usage;
      const choice = ev.choices?.[0];
      if (!choice) continue;
      if (choice.finish_reason) finish = choice.finish_reason;
      const piece = choice.delta?.content;
      if (!piece) continue;
      tFirst ??= performance.now();
      pieces++;
      reply.content += piece;
      if (!drawn) { drawn = true; requestAnimationFrame(redraw); } // one markdown render a frame
    }
    if (finish === "length") reply.note = "stopped at max tokens";
  } catch (e) {
    reply.note = e.name === "AbortError" ? "stopped" : "error: " + e.message;
  } finally {
    reply.stats = replyStats(usage, pieces, t0, tFirst, performance.now());
    running = null;
    $("send").hidden = false;
    $("stop").hidden = true;
    save();
    render();
  }
}

// ---- settings

function readSettings() {
  const s = {
    system: $("system").value,
    temperature: Number($("temperature").value),
    maxTokens: Math.max(1, Math.floor(Number($("max-tokens").value) || 1)),
  };
  store.set("settings", s);
  return s;
}

function restoreSettings() {
  const s = store.get("settings", null);
  if (!s) return;
  $("system").value = s.system ?? "";
  $("temperature").value = s.temperature ?? 0.7;
  $("max-tokens").value = s.maxTokens ?? 512;
}

function closeMenu() { document.body.classList.remove("menu-open"); }

// ---- wiring

$("send").onclick = send;
$("stop").onclick = () => running?.abort();
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    send();
  }
});
$("new-chat").onclick = () => {
  if (running) return;
  currentId = null; // made by the first message, so that empty chats do not pile up
  save();
  render();
  closeMenu();
  $("input").focus();
};
$("menu").onclick = () => document.body.classList.toggle("menu-open");
$("forget-key").hidden = !apiKey;
$("forget-key").onclick = () => {
  apiKey = "";
  store.set("apiKey", "");
  $("forget-key").hidden = true;
};
for (const id of ["system", "temperature", "max-tokens"]) $(id).addEventListener("change", readSettings);
restoreSettings();
render();
loadModel();
