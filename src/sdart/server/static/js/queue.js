// The queue view: every job running or waiting, whoever sent it, with its place, its progress and a Cancel.

import { $, api, element, post } from "./api.js";

let refreshing = null;
let onCounts = () => {};
let isOwn = () => false;  // whether this page submitted the job

export function setupQueue(counts, own) {
  onCounts = counts;
  isOwn = own;
}

// Re-read the queue (coalesced: a burst of events makes one request).
export function refreshQueue() {
  refreshing ??= (async () => {
    await new Promise((resolve) => setTimeout(resolve, 50));
    refreshing = null;
    const { ok, body } = await api("/api/v1/queue");
    if (ok) render(body);
  })();
  return refreshing;
}

function render(queue) {
  $("queue").replaceChildren(...queue.jobs.map(item));
  $("queue-empty").hidden = queue.jobs.length > 0;
  $("queue-count").textContent = queue.jobs.length ? `(${queue.running} running · ${queue.queued} waiting)` : "";
  onCounts(queue);
}

function item(job) {
  const cancel = element("button", { type: "button", className: "secondary small", textContent: "Cancel" });
  cancel.setAttribute("aria-label", `Cancel: ${job.request.prompt || "(no prompt)"}`);
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    await post(`/api/v1/jobs/${job.id}/cancel`, {});
    refreshQueue();
  });
  const bar = element("div", { className: "progress small" }, [element("div", { className: "bar" })]);
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-label", "Progress");
  const node = element("li", { className: "queue-item" }, [
    element("span", { className: "prompt", textContent: job.request.prompt || "(no prompt)" }),
    element("span", { className: "where hint" }),
    bar,
    cancel,
  ]);
  node.dataset.job = job.id;
  node.dataset.status = job.status;
  show(node, job.status === "running" ? job : null, job);
  return node;
}

function show(node, progress, job) {
  const fraction = progress?.progress ?? progress?.fraction ?? 0;
  const percent = Math.round(fraction * 100);
  node.querySelector(".bar").style.width = `${percent}%`;
  node.querySelector("[role=progressbar]").setAttribute("aria-valuenow", String(percent));
  if (job) node.dataset.source = isOwn(job.id) ? "this page" : job.source;
  const source = node.dataset.source ?? "";
  node.querySelector(".where").textContent = node.dataset.status === "running"
    ? `running${progress?.step ? ` · step ${progress.step}/${progress.total}` : ""} · from ${source}`
    : `#${job.position} in line · from ${source}`;
}

// A progress event of a job in the list: move its bar without re-reading the queue.
export function onQueueProgress(event) {
  const node = $("queue").querySelector(`[data-job="${event.job}"]`);
  if (!node) { refreshQueue(); return; }
  node.dataset.status = "running";
  show(node, event, null);
}
