// The server's one event stream (GET /api/v1/events): every job's events, whoever sent it, and model
// switches. When the server goes away the page says so and keeps trying; on the way back it says so too,
// and the page re-reads what it shows (the stream's first event, "hello", comes on every connection).

import { $ } from "./api.js";

const NAMES = ["hello", "queued", "started", "progress", "image", "done", "deleted", "model"];
const RETRY_MS = 2000;
let source = null;
let lost = false;
let startedAt = null;

// `handlers`: {name: (data) => …} for the events above; `reconnected(restarted)` after a lost connection.
export function connect(handlers) {
  source?.close();
  source = new EventSource("/api/v1/events");
  for (const name of NAMES) {
    source.addEventListener(name, (event) => handlers[name]?.(JSON.parse(event.data)));
  }
  source.addEventListener("hello", (event) => {
    const hello = JSON.parse(event.data);
    const restarted = startedAt !== null && hello.started_at !== startedAt;
    startedAt = hello.started_at;
    if (lost) {
      lost = false;
      say(restarted ? "Reconnected: the server restarted; queued jobs carry on." : "Reconnected to the server.", "ok");
      handlers.reconnected?.(restarted);
    }
  });
  source.onerror = () => {
    if (!lost) say("Lost the connection to the server; reconnecting…", "lost");
    lost = true;
    // The browser retries by itself while the stream is CONNECTING; a refused answer closes it for good.
    if (source.readyState === EventSource.CLOSED) setTimeout(() => connect(handlers), RETRY_MS);
  };
}

function say(text, kind) {
  const line = $("connection");
  line.textContent = text;
  line.dataset.kind = kind;
  line.hidden = false;
  if (kind === "ok") setTimeout(() => { if (line.dataset.kind === "ok") line.hidden = true; }, 8000);
}
