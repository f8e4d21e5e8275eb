// The console: both nodes side by side, live from each node's event stream.
import { follow, forgetTokens, HttpError, request, setToken, token } from "./api.js";

const SERVING = new Set(["primary", "alone"]);
const ACTIONS = {
  start: ["POST", "/v1/commands/start"],
  stop: ["POST", "/v1/commands/stop"],
  prim: ["POST", "/v1/commands/prim"],
  second: ["POST", "/v1/commands/second"],
  swap: ["POST", "/v1/commands/swap"],
  fullsync: ["POST", "/v1/commands/fullsync"],
  verify: ["POST", "/v1/replication/verify"],
};
const cards = new Map(); // node name -> {node, element, status, connection}
// What the page showed and when (Date.now()), for tests and for the curious.
window.failoverConsole = { rendered: [] };

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, text, className) {
  const element = document.createElement(tag);
  if (text !== undefined && text !== null) element.textContent = String(text);
  if (className) element.className = className;
  return element;
}

function seconds(value) {
  if (value === null || value === undefined) return "never";
  return value < 10 ? `${value.toFixed(1)} s ago` : `${Math.round(value)} s ago`;
}

function bytes(value) {
  if (value === null || value === undefined) return "?";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let n = value;
  let unit = 0;
  while (n >= 1000 && unit < units.length - 1) {
    n /= 1000;
    unit += 1;
  }
  return `${n.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

function duration(value) {
  if (value === null || value === undefined) return "?";
  if (value < 90) return `${Math.round(value)} s`;
  if (value < 5400) return `${Math.round(value / 60)} min`;
  return `${(value / 3600).toFixed(1)} h`;
}

function renderLinks(card, status) {
  const body = $(".links tbody", card.element);
  body.replaceChildren(
    ...status.links.map((link) => {
      const row = el("tr");
      row.dataset.link = link.name;
      row.append(el("td", link.name), el("td", link.transport));
      row.append(el("td", link.up ? "up" : "down", link.up ? "up" : "down"));
      row.append(el("td", seconds(link.last_seen_ago)));
      return row;
    }),
  );
}

function renderReplication(card, status) {
  const box = $(".replication", card.element);
  const rep = status.replication;
  if (!rep) {
    box.replaceChildren(el("p", "no replicated directories"));
    return;
  }
  const lines = [];
  const sender = rep.sender || {};
  lines.push(el("p", `${rep.mode}; ${rep.replicating ? "replicating" : "not replicating"} (ack: ${rep.ack})`));
  if (rep.channel_problem) lines.push(el("p", `channel quiet: ${rep.channel_problem}`, "warn"));
  const lag = [];
  if (sender.in_flight_bytes !== undefined) lag.push(`${bytes(sender.in_flight_bytes)} awaiting acknowledgement`);
  if (sender.last_ack_latency !== undefined && sender.last_ack_latency !== null) {
    lag.push(`last ack ${(sender.last_ack_latency * 1000).toFixed(1)} ms`);
  }
  if (rep.writes_held) lag.push(`${rep.writes_held} fsync(s) held`);
  if (lag.length) lines.push(el("p", `lag: ${lag.join(", ")}`, "lag"));
  const resync = rep.resync;
  if (resync) {
    const p = el("p", "", "resync");
    p.append(`resync ${resync.state}${resync.full ? " (full)" : ""}: `);
    if (resync.bytes_total) {
      const bar = el("progress");
      bar.max = resync.bytes_total;
      bar.value = resync.bytes_done;
      p.append(bar, ` ${bytes(resync.bytes_done)} of ${bytes(resync.bytes_total)}`);
    } else {
      p.append(`${resync.items_done} of ${resync.items_total} items`);
    }
    if (resync.state === "running") p.append(`, ${bytes(resync.rate)}/s, ETA ${duration(resync.eta)}`);
    if (resync.error) p.append(`, error: ${resync.error}`);
    lines.push(p);
  }
  if (rep.resync_wanted) lines.push(el("p", "waits to be resynchronised"));
  if (rep.verified) {
    lines.push(el("p", `last verify: ${rep.verified.in_sync ? "copies match" : "copies differ"}`));
  }
  box.replaceChildren(...lines);
}

function showState(card, state) {
  const section = card.element;
  if (section.dataset.state === state) return;
  const at = Date.now();
  section.dataset.state = state;
  section.dataset.stateAt = String(at);
  window.failoverConsole.rendered.push({ node: card.node.name, state, at });
  renderPair();
}

function renderStatus(card, status) {
  card.status = status;
  clusterName = status.cluster;
  const section = card.element;
  $(".state", section).textContent = status.state;
  $(".substatus", section).textContent = `(${status.substatus})`;
  $(".reason", section).textContent = status.reason;
  $(".generation", section).textContent = status.consistent
    ? status.generation
    : `${status.generation} (inconsistent: resync incomplete)`;
  const peer = status.peer;
  $(".peer", section).textContent = peer
    ? `${peer.node}: ${peer.state} (${peer.substatus}), ${peer.alive ? "alive" : "not heard"}, last heard ${seconds(peer.last_seen_ago)}`
    : "never heard";
  $(".in-sync", section).textContent = status.in_sync ? "yes" : `no: ${status.in_sync_reason}`;
  const degraded = $(".degraded", section);
  degraded.hidden = !status.degraded;
  degraded.textContent = status.degraded ? `degraded: ${status.degraded.reason}` : "";
  renderLinks(card, status);
  renderReplication(card, status);
  const moved = card.generation !== status.generation || card.state !== status.state;
  card.generation = status.generation;
  card.state = status.state;
  showState(card, status.substatus === "ready" ? status.state : `${status.state}:transient`);
  if (moved || status.substatus === "ready") refreshTransitions(card, moved);
}

let clusterName = "";

function renderPair() {
  const serving = [...cards.values()].filter(
    (card) => card.connection === "live" && card.status && SERVING.has(card.status.state),
  );
  const line = $("#serving");
  if (serving.length === 1) {
    const card = serving[0];
    line.dataset.node = card.node.name;
    line.textContent = `serving: ${card.node.name} (${card.status.state}${card.status.substatus === "ready" ? "" : ", starting"})`;
  } else {
    line.dataset.node = "";
    line.textContent = serving.length ? `several nodes serve: ${serving.map((c) => c.node.name).join(", ")}` : "no node serves";
  }
  $("#cluster").textContent = clusterName;
}

async function refreshTransitions(card, force) {
  if (!force && card.transitionsFetched) return;
  card.transitionsFetched = true;
  try {
    const { body } = await request(card.node, "GET", "/v1/transitions?limit=15");
    const list = $(".transitions", card.element);
    list.replaceChildren(
      ...body.transitions.reverse().map((record) => {
        const item = el("li");
        const time = el("time", record.time.replace("T", " ").replace(/\+00:00$/, "Z"));
        time.dateTime = record.time;
        item.append(time, ` ${record.from} → ${record.to} on ${record.event}: ${record.reason}`);
        return item;
      }),
    );
  } catch {
    card.transitionsFetched = false;
  }
}

function setConnection(card, connection) {
  card.connection = connection;
  const badge = $(".conn", card.element);
  badge.dataset.conn = connection;
  badge.textContent = { live: "live", down: "unreachable", unauthorized: "wrong token" }[connection];
  if (connection !== "live") showState(card, "unreachable");
  renderPair();
}

function confirmAction(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function runAction(card, name) {
  const result = $(".result", card.element);
  if (!(await confirmAction(`Run ${name} on ${card.node.name}?`))) return;
  result.className = "result";
  result.textContent = `${name}: sent…`;
  const [method, path] = ACTIONS[name];
  try {
    const { status, body } = await request(card.node, method, path, name === "verify" ? 900000 : 60000);
    if (name === "verify") {
      result.className = status === 200 ? "result accepted" : "result refused";
      result.textContent = status === 200 ? `verify: ${body.text}` : `verify refused: ${body.error}`;
    } else if (body.accepted) {
      result.className = "result accepted";
      result.textContent = `${name} accepted: ${body.message}`;
    } else {
      result.className = "result refused";
      result.textContent = `${name} refused: ${body.message}`;
    }
  } catch (error) {
    result.className = "result error";
    result.textContent = failureText(name, card.node.name, error);
  }
}

// What a failed command says: the token's role (403), a wrong token (401), else the daemon's line.
function failureText(name, node, error) {
  if (!(error instanceof HttpError)) return `${name}: ${node} cannot be reached`;
  if (error.status === 403) return `${name} not sent: this token may only read (commands need the admin token)`;
  if (error.status === 401) return `${name} not sent: wrong token for ${node}`;
  return `${name} failed: ${error.message}`;
}

function addCard(node) {
  const element = $("#node-template").content.firstElementChild.cloneNode(true);
  element.dataset.node = node.name;
  element.id = `node-${node.name}`;
  $(".name", element).textContent = node.name;
  $(".name", element).title = node.url;
  const card = { node, element, status: null, connection: "connecting" };
  for (const button of element.querySelectorAll("[data-command]")) {
    button.addEventListener("click", () => runAction(card, button.dataset.command));
  }
  $(".node-token-use", element).addEventListener("click", () => {
    setToken($(".node-token", element).value.trim(), node.name);
    $(".node-token", element).value = "";
  });
  cards.set(node.name, card);
  $("#nodes").append(element);
  follow(node, (status) => renderStatus(card, status), (state) => setConnection(card, state));
}

async function connect() {
  const error = $("#login-error");
  error.textContent = "";
  const here = { name: "", url: location.origin };
  let nodes;
  try {
    const { body } = await request(here, "GET", "/v1/nodes");
    nodes = body;
  } catch (failure) {
    error.textContent = failure instanceof HttpError && failure.status === 401 ? "wrong token" : `cannot read the nodes: ${failure.message}`;
    return;
  }
  $("#nodes").replaceChildren();
  cards.clear();
  for (const node of nodes.nodes) {
    // This node as the browser reached it (a tunnel, a name); the peer as the cluster file says.
    addCard(node.name === nodes.self ? { name: node.name, url: location.origin } : node);
  }
  $("#login").classList.add("connected");
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("#token").value.trim());
  $("#token").value = "";
  // Connected already: start afresh (the streams of the old token end with the page).
  if (cards.size) location.reload();
  else connect();
});
$("#logout").addEventListener("click", () => {
  forgetTokens();
  location.reload();
});
if (token("")) connect();
