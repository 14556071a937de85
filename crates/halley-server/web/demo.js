// The chat demo served at `/`: rooms, presence, and a live connection panel,
// all through halley.js.
//
// Channels:
//   /chat/<room>         chat messages {user, text, from, mid, t}
//   /presence/<room>     membership events from the server's presence service
//   /service/presence    join / leave / list (request-response)
//   /service/echo        a ping every few seconds for the round-trip time
import { Halley } from "/halley.js";
import { sameOriginEndpoint } from "/endpoint.js";

const $ = (id) => document.getElementById(id);
const endpoint = sameOriginEndpoint(new URLSearchParams(location.search).get("endpoint"), location.href);
const client = new Halley(endpoint);
const states = [];
window.halleyDemo = { client, states }; // for the browser tests and the curious

// ---- live panel -------------------------------------------------------

const STATES = {
  disconnected: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
};
let retryTimer = null;

function showState(state, info = {}) {
  $("status").dataset.state = state;
  clearInterval(retryTimer);
  let text = STATES[state];
  if (state === "reconnecting" && info.delay > 1000) {
    const until = Date.now() + info.delay;
    const tick = () => {
      const s = Math.ceil((until - Date.now()) / 1000);
      $("status-text").textContent = s > 0 ? `Reconnecting in ${s} s…` : "Reconnecting…";
    };
    tick();
    retryTimer = setInterval(tick, 500);
  } else {
    $("status-text").textContent = info.error ? `Stopped: ${info.error.message}` : text;
  }
  $("transport").textContent = client.transport ?? "–";
  if (state !== "connected") $("rtt").textContent = "–"; // a stale figure would mislead
  if (state === "connected") banner(null);
  else if (state === "offline") banner("You are offline. Messages you send will go out when the network is back.", "offline");
  else if (state === "reconnecting") banner("Connection lost, reconnecting… Messages you send will wait.");
}

client.on("state", (state, info) => { states.push(state); showState(state, info); });
client.on("transport", (type) => { $("transport").textContent = type; });

function banner(text, kind = "wait") {
  const el = $("banner");
  el.hidden = !text;
  el.textContent = text ?? "";
  el.dataset.kind = kind;
}

// Messages per second: arrivals over the last 5 s.
const arrivals = [];
function counted() {
  arrivals.push(performance.now());
}
setInterval(() => {
  const since = performance.now() - 5000;
  while (arrivals.length && arrivals[0] < since) arrivals.shift();
  const rate = arrivals.length / 5;
  $("rate").textContent = rate >= 10 ? rate.toFixed(0) : rate.toFixed(1).replace(/\.0$/, "");
}, 1000);

function showRtt(ms) {
  $("rtt").textContent = `${Math.max(0, Math.round(ms))} ms`;
}

// A ping through the server every 5 s while connected.
async function ping() {
  if (client.state !== "connected") return;
  const sent = performance.now();
  try {
    await client.call("echo", { ping: Date.now() });
    showRtt(performance.now() - sent);
  } catch { /* the state panel tells */ }
}
setInterval(ping, 5000);
client.on("state", (state) => { if (state === "connected") setTimeout(ping, 100); });

// ---- rooms ----------------------------------------------------------------

let room = null;          // {name, subs, me, members: Map(id -> name)}
const pending = new Map(); // mid -> {el, sent}

const lobby = $("lobby");
const chat = $("chat");
const saved = { get: (k) => { try { return localStorage.getItem(k); } catch { return null; } },
  set: (k, v) => { try { localStorage.setItem(k, v); } catch { /* private mode */ } } };
$("name").value = saved.get("halley-demo-name") ?? "";
const hashRoom = decodeURIComponent(location.hash.slice(1));
if (/^[A-Za-z0-9_-]{1,64}$/.test(hashRoom)) $("room").value = hashRoom;

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const roomName = $("room").value.trim();
  if (!name) return;
  saved.set("halley-demo-name", name);
  $("join").disabled = true;
  $("join").textContent = "Joining…";
  $("join-error").hidden = true;
  try {
    await join(name, roomName);
    history.replaceState(null, "", `#${encodeURIComponent(roomName)}`);
  } catch (error) {
    $("join-error").textContent = `Could not join: ${error.message}`;
    $("join-error").hidden = false;
  } finally {
    $("join").disabled = false;
    $("join").textContent = "Join room";
  }
});

async function join(name, roomName) {
  const next = { name: roomName, user: name, me: null, members: new Map(), subs: [] };
  const [chatSub, presenceSub, joined] = await Promise.all(client.batch(() => [
    client.subscribe(`/chat/${roomName}`, (data) => { counted(); onChat(data); }),
    client.subscribe(`/presence/${roomName}`, (data) => { counted(); onPresence(data); }),
    client.call("presence", { action: "join", room: roomName, name }),
  ]));
  next.subs = [chatSub, presenceSub];
  room = next;
  applyMembers(joined);
  $("messages").replaceChildren();
  $("room-name").textContent = `# ${roomName}`;
  lobby.hidden = true;
  chat.hidden = false;
  renderMembers();
  system(`You joined # ${roomName}. Open this page in another tab to chat with yourself.`);
  $("text").focus();
}

function applyMembers(reply) {
  room.me = reply.you;
  room.members = new Map(reply.members.map((m) => [m.id, m.name]));
}

// A new session (the server forgot the old one, e.g. after a long outage):
// halley.js has subscribed again; the membership must be renewed.
client.on("handshake", async ({ rehandshake }) => {
  if (!rehandshake || !room) return;
  const current = room;
  current.rejoining = true;
  try {
    const joined = await client.call("presence", { action: "join", room: current.name, name: current.user });
    current.rejoining = false;
    if (room !== current) return;
    applyMembers(joined);
    renderMembers();
    system("Reconnected with a new session. Messages sent while you were away may be missing.");
  } catch (error) {
    current.rejoining = false;
    system(`Could not rejoin: ${error.message}`);
  }
});

$("leave").addEventListener("click", async () => {
  const current = room;
  if (!current) return;
  room = null;
  chat.hidden = true;
  lobby.hidden = false;
  history.replaceState(null, "", location.pathname + location.search);
  await Promise.allSettled([
    ...current.subs.map((s) => s.unsubscribe()),
    client.call("presence", { action: "leave", room: current.name }),
  ]);
});

// ---- presence -------------------------------------------------------------

const REASONS = { left: "left", disconnected: "closed the page", expired: "lost the connection" };

function onPresence(event) {
  if (!room || event.room !== room.name) return;
  const { id, name } = event.member;
  if (event.event === "join") {
    const known = room.members.get(id);
    room.members.set(id, name);
    // (Our own join, also while rejoining after a new session, is not news.)
    const self = id === room.me || (room.rejoining && name === room.user);
    if (known === undefined && !self) system(`${name} joined`);
  } else if (event.event === "leave") {
    if (room.members.delete(id)) system(`${name} ${REASONS[event.reason] ?? "left"}`);
  }
  renderMembers();
}

function renderMembers() {
  const list = [...room.members].sort((a, b) => a[1].localeCompare(b[1]) || a[0].localeCompare(b[0]));
  $("members").replaceChildren(...list.map(([id, name]) => {
    const li = document.createElement("li");
    li.className = id === room.me ? "me" : "";
    li.dataset.id = id;
    li.append(avatar(name), Object.assign(document.createElement("span"), { className: "name", textContent: name }));
    return li;
  }));
  $("member-count").textContent = String(list.length);
}

function avatar(name) {
  const el = document.createElement("span");
  el.className = "avatar";
  el.textContent = [...name][0]?.toUpperCase() ?? "?";
  el.style.background = `hsl(${hash(name) % 360} 55% 45%)`;
  el.setAttribute("aria-hidden", "true");
  return el;
}

function hash(text) {
  let h = 7;
  for (const c of text) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return h;
}

// ---- messages -------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !room) return;
  $("text").value = "";
  const message = { user: room.user, text, from: room.me, mid: randomId(), t: Date.now() };
  const el = bubble(message, true);
  el.classList.add("pending");
  setNote(el, client.state === "connected" ? "sending…" : "waiting for the connection…");
  pending.set(message.mid, { el, sent: performance.now() });
  client.publish(`/chat/${room.name}`, message).catch((error) => {
    pending.delete(message.mid);
    el.classList.replace("pending", "failed");
    setNote(el, `not sent: ${error.message}`);
  });
});

function onChat(message) {
  if (!room || typeof message?.text !== "string") return;
  const mine = pending.get(message.mid);
  if (mine) {
    // Our own message came back through the server: delivered.
    pending.delete(message.mid);
    showRtt(performance.now() - mine.sent);
    mine.el.classList.remove("pending");
    setNote(mine.el, null);
    return;
  }
  bubble(message, message.from === room.me);
}

function bubble(message, mine) {
  const li = document.createElement("li");
  li.className = mine ? "msg mine" : "msg";
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = Object.assign(document.createElement("span"), { className: "who", textContent: mine ? "You" : String(message.user ?? "?") });
  const when = Object.assign(document.createElement("time"), { textContent: clock(message.t) });
  meta.append(who, when);
  const text = Object.assign(document.createElement("div"), { className: "bubble", textContent: message.text });
  li.append(meta, text);
  append(li);
  return li;
}

function setNote(el, note) {
  let n = el.querySelector(".state");
  if (!note) return n?.remove();
  if (!n) el.append((n = Object.assign(document.createElement("div"), { className: "state" })));
  n.textContent = note;
}

function system(text) {
  append(Object.assign(document.createElement("li"), { className: "sys", textContent: text }));
}

function append(el) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(el);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

// Works on plain http:// too (crypto.randomUUID needs a secure context).
function randomId() {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function clock(t) {
  const d = Number.isFinite(t) ? new Date(t) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

showState(client.state);
client.connect().catch(() => {});
