// Talking to the daemons: the bearer token (sessionStorage only), JSON requests,
// and the event stream read with fetch() (EventSource cannot send a header).

const KEY = "failover.token";
const STALE_MS = 15000; // the server sends something at least every 5 s

export function token(node) {
  return sessionStorage.getItem(`${KEY}.${node}`) || sessionStorage.getItem(KEY) || "";
}

export function setToken(value, node) {
  sessionStorage.setItem(node ? `${KEY}.${node}` : KEY, value);
}

export function forgetTokens() {
  for (const key of Object.keys(sessionStorage)) {
    if (key === KEY || key.startsWith(`${KEY}.`)) sessionStorage.removeItem(key);
  }
}

export class HttpError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// One request; resolves with {status, body} for 2xx and 409 (a refusal is an answer),
// rejects with HttpError otherwise, or a TypeError when the node cannot be reached.
export async function request(node, method, path, timeoutMs = 10000) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(node.url + path, {
      method,
      headers: { Authorization: `Bearer ${token(node.name)}` },
      cache: "no-store",
      signal: controller.signal,
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.ok || response.status === 409) return { status: response.status, body };
    throw new HttpError(response.status, body);
  } finally {
    clearTimeout(timer);
  }
}

function parseEvent(block) {
  const event = { type: "message", data: [] };
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "data") event.data.push(value);
  }
  return { type: event.type, data: event.data.join("\n") };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Follow node's /v1/events forever: onStatus(status) for each snapshot,
// onConnection("live" | "down" | "unauthorized") when the stream's health changes.
export async function follow(node, onStatus, onConnection) {
  let delay = 250;
  for (;;) {
    const controller = new AbortController();
    let timer = 0;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(), STALE_MS);
    };
    let state = "down";
    try {
      arm();
      const response = await fetch(node.url + "/v1/events", {
        headers: { Authorization: `Bearer ${token(node.name)}` },
        cache: "no-store",
        signal: controller.signal,
      });
      if (response.status === 401) {
        state = "unauthorized";
      } else if (response.ok) {
        onConnection("live");
        delay = 250;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          arm();
          buffer += value.replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const event = parseEvent(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
            if (event.type === "status") onStatus(JSON.parse(event.data));
          }
        }
      }
    } catch {
      // unreachable, reset, or silent past STALE_MS: reconnect below
    } finally {
      clearTimeout(timer);
    }
    onConnection(state);
    await sleep(delay);
    delay = Math.min(delay * 2, 4000);
  }
}
