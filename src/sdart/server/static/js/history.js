// The history: past jobs newest first, filtered by prompt text and status, a page at a time.

import { $, api, element } from "./api.js";

const PAGE = 24;
let offset = 0;
let jobs = [];          // the jobs on the page shown
let onOpen = () => {};
let filterTimer = null;

export function setupHistory(open) {
  onOpen = open;
  $("history-text").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => loadHistory(0), 250);
  });
  $("history-status").addEventListener("change", () => loadHistory(0));
  $("refresh").addEventListener("click", () => loadHistory(offset));
  $("page-prev").addEventListener("click", () => loadHistory(Math.max(0, offset - PAGE)));
  $("page-next").addEventListener("click", () => loadHistory(offset + PAGE));
}

export async function loadHistory(at = offset) {
  const query = new URLSearchParams({ limit: PAGE, offset: at });
  const text = $("history-text").value.trim();
  if (text) query.set("q", text);
  if ($("history-status").value) query.set("status", $("history-status").value);
  const { ok, body } = await api(`/api/v1/jobs?${query}`);
  if (!ok) return;
  if (!body.jobs.length && at > 0 && body.total > 0) { loadHistory(Math.max(0, at - PAGE)); return; }
  offset = at;
  jobs = body.jobs;
  $("gallery").replaceChildren(...jobs.map(item));
  const pages = Math.max(1, Math.ceil(body.total / PAGE));
  $("page-info").textContent = `Page ${Math.floor(offset / PAGE) + 1} of ${pages} · ${body.total} job(s)`;
  $("page-prev").disabled = offset === 0;
  $("page-next").disabled = body.next_offset == null;
}

function item(job) {
  const button = element("button", { type: "button", className: "gallery-item" });
  button.dataset.job = job.id;
  const count = job.images_total > 1 ? ` · ${job.images.length}/${job.images_total}` : "";
  button.append(
    job.images.length ? element("img", { src: job.images[0].url, alt: "", loading: "lazy" })
                      : element("span", { className: "empty", textContent: job.status }),
    element("span", { className: "caption" }, [
      element("span", { className: "prompt", textContent: job.request.prompt || "(no prompt)" }),
      element("span", { className: `badge ${job.status}`, textContent: `${job.status}${count} · ${job.source}` }),
    ]),
  );
  button.setAttribute("aria-label", `Open: ${job.request.prompt} (${job.status})`);
  button.addEventListener("click", () => onOpen(job));
  return element("li", {}, [button]);
}

// The job beside `job` on the page shown (direction 1: older, −1: newer), with images; null at the page's end.
export function neighbour(job, direction) {
  let at = jobs.findIndex((j) => j.id === job.id);
  if (at < 0) return null;
  for (at += direction; at >= 0 && at < jobs.length; at += direction) {
    if (jobs[at].images.length) return jobs[at];
  }
  return null;
}
