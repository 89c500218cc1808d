// The sdart page: a form that queues jobs on the native API, a progress bar fed by the job's event stream,
// the result, and a gallery of past jobs. Plain DOM code; no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const FIELDS = ["prompt", "negative_prompt", "sampler_name", "steps", "cfg_scale", "width", "height",
                "batch_size", "n_iter", "seed"];
const NUMBERS = new Set(["steps", "cfg_scale", "width", "height", "batch_size", "n_iter", "seed"]);
const IMG2IMG_FIELDS = ["init_image", "denoising_strength"];  // sent only when a picture is chosen
const PAGE = 24;

let currentJob = null;    // id of the job this page is following
let shownJob = null;      // the job shown in the viewer (its request feeds "reuse these settings")
let events = null;        // EventSource of currentJob
let galleryOffset = 0;

async function api(path, options = {}) {
  const response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  return { ok: response.ok, status: response.status, body };
}

// --- form ------------------------------------------------------------------------------------------------

async function readForm() {
  const request = {};
  for (const name of FIELDS) {
    const value = $(name).value.trim();
    if (value === "") continue;  // empty: the server's default (width/height: the model's own size)
    request[name] = NUMBERS.has(name) ? Number(value) : value;
  }
  const picture = $("init_image").files[0];
  if (picture) {  // img2img: the picture travels as a data: URL; the server stores it
    request.init_image = await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(picture);
    });
    request.denoising_strength = Number($("denoising_strength").value);
  }
  return request;
}

function fillForm(request) {
  for (const name of FIELDS) {
    const value = request[name];
    $(name).value = value === null || value === undefined ? "" : value;
  }
  $("prompt").focus();
}

function showErrors(detail) {
  for (const name of [...FIELDS, ...IMG2IMG_FIELDS]) $(name).removeAttribute("aria-invalid");
  if (!detail) { $("form-errors").textContent = ""; return; }
  const lines = (Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail) }]).map((error) => {
    const field = error.loc[error.loc.length - 1];
    if (FIELDS.includes(field) || IMG2IMG_FIELDS.includes(field)) $(field).setAttribute("aria-invalid", "true");
    return error.loc.length > 1 ? `${field}: ${error.msg}` : error.msg;
  });
  $("form-errors").textContent = lines.join("\n");
}

async function generate(event) {
  event?.preventDefault();
  if (!$("prompt").value.trim()) { showErrors([{ loc: ["body", "prompt"], msg: "write a prompt first" }]); return; }
  showErrors(null);
  $("generate").disabled = true;
  const { ok, body } = await api("/api/v1/jobs", { method: "POST", body: JSON.stringify(await readForm()) });
  if (!ok) { showErrors(body?.detail ?? "the server refused the request"); $("generate").disabled = false; return; }
  follow(body.id, body.position);
}

// --- following a job -------------------------------------------------------------------------------------

function setProgress(fraction, text) {
  const percent = Math.round(fraction * 100);
  $("progress").setAttribute("aria-valuenow", String(percent));
  $("progress").querySelector(".bar").style.width = `${percent}%`;
  $("progress-text").textContent = text;
}

function follow(jobId, position) {
  currentJob = jobId;
  $("cancel").disabled = false;
  setProgress(0, position ? `Queued: ${position} job(s) ahead` : "Starting…");
  events?.close();
  events = new EventSource(`/api/v1/jobs/${jobId}/events`);
  events.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    const batch = p.iterations > 1 ? `batch ${p.iteration + 1}/${p.iterations} · ` : "";
    const eta = p.eta_s != null ? ` · ${p.eta_s.toFixed(1)} s left` : "";
    setProgress(p.fraction, `${batch}step ${p.step}/${p.total}${eta}`);
    showPreview(jobId);
  });
  events.addEventListener("image", async () => {
    const { ok, body } = await api(`/api/v1/jobs/${jobId}`);
    if (ok) showJob(body);
  });
  events.addEventListener("done", async (e) => {
    events.close();
    const done = JSON.parse(e.data);
    const { body } = await api(`/api/v1/jobs/${jobId}`);
    const labels = { succeeded: "Done", cancelled: "Cancelled", failed: `Failed: ${done.error}` };
    setProgress(done.status === "succeeded" ? 1 : body.progress, labels[done.status] ?? done.status);
    showJob(body);
    finish();
    loadGallery(true);
  });
  events.onerror = () => {  // the server went away; the job is safe in the queue
    if (events.readyState === EventSource.CLOSED) { setProgress(0, "Lost the connection to the server"); finish(); }
  };
}

let previewBusy = false;  // one preview request at a time: on a GPU, steps come faster than round trips

async function showPreview(jobId) {
  if (previewBusy) return;
  previewBusy = true;
  try {
    const response = await fetch(`/api/v1/jobs/${jobId}/preview`);
    const picture = response.status === 200 ? await response.blob() : null;
    if (!picture || jobId !== currentJob) return;  // nothing to draw yet, or the job ended meanwhile
    const image = $("result-image");
    if (image.dataset.previewUrl) URL.revokeObjectURL(image.dataset.previewUrl);
    image.dataset.previewUrl = URL.createObjectURL(picture);
    image.src = image.dataset.previewUrl;
    image.alt = "Live preview of the running job";
    image.classList.add("preview");
    image.hidden = false;
    $("placeholder").hidden = true;
  } finally {
    previewBusy = false;
  }
}

function finish() {
  currentJob = null;
  $("cancel").disabled = true;
  $("generate").disabled = false;
}

async function cancel() {
  if (!currentJob) return;
  $("progress-text").textContent = "Cancelling…";
  await api(`/api/v1/jobs/${currentJob}`, { method: "DELETE" });
}

// --- viewer ----------------------------------------------------------------------------------------------

function showImage(job, index) {
  const image = job.images[index];
  $("result-image").classList.remove("preview");
  $("result-image").src = image.url;
  $("result-image").alt = `${job.request.prompt} (seed ${image.seed})`;
  $("result-image").hidden = false;
  $("placeholder").hidden = true;
  $("result-params").textContent = image.infotext;
  for (const [i, thumb] of [...$("result-thumbs").children].entries()) {
    thumb.setAttribute("aria-pressed", String(i === index));
  }
}

function showJob(job) {
  shownJob = job;
  $("result-thumbs").replaceChildren(...(job.images.length > 1 ? job.images.map((image, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.setAttribute("aria-label", `Image ${i + 1}, seed ${image.seed}`);
    button.innerHTML = `<img src="${image.url}" alt="">`;
    button.addEventListener("click", () => showImage(job, i));
    return button;
  }) : []));
  $("result-details").hidden = false;
  if (job.images.length) {
    showImage(job, 0);
  } else {
    $("result-image").hidden = true;
    $("placeholder").hidden = false;
    $("placeholder").textContent = job.error ? `Failed: ${job.error}` : `No image (${job.status})`;
    $("result-params").textContent = JSON.stringify(job.request, null, 2);
  }
}

// --- gallery ---------------------------------------------------------------------------------------------

function galleryItem(job) {
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "gallery-item";
  button.dataset.job = job.id;
  const picture = job.images.length
    ? `<img src="${job.images[0].url}" alt="" loading="lazy">`
    : `<span class="empty">${job.status}</span>`;
  button.innerHTML = `${picture}<span class="caption"><span class="prompt"></span>
    <span class="badge ${job.status}">${job.status} · ${job.images.length} image(s)</span></span>`;
  button.querySelector(".prompt").textContent = job.request.prompt || "(no prompt)";
  button.setAttribute("aria-label", `Open: ${job.request.prompt} (${job.status})`);
  button.addEventListener("click", () => { showJob(job); $("result-image").scrollIntoView({ block: "nearest" }); });
  item.append(button);
  return item;
}

async function loadGallery(reset) {
  if (reset) galleryOffset = 0;
  const { ok, body } = await api(`/api/v1/jobs?limit=${PAGE}&offset=${galleryOffset}`);
  if (!ok) return;
  const items = body.jobs.map(galleryItem);
  if (reset) $("gallery").replaceChildren(...items); else $("gallery").append(...items);
  galleryOffset = body.next_offset ?? galleryOffset + body.jobs.length;
  $("more").hidden = body.next_offset == null;
}

// --- start -----------------------------------------------------------------------------------------------

async function init() {
  const [health, samplers] = await Promise.all([api("/api/v1/health"), api("/api/v1/samplers")]);
  if (health.ok) {
    const q = health.body.queue;
    $("server-status").textContent = `${health.body.model} · ${q.queued} queued · ${q.running} running`;
  } else {
    $("server-status").textContent = "server unavailable";
  }
  if (samplers.ok) {
    $("sampler_name").replaceChildren(...samplers.body.samplers.map((s) => new Option(s.name, s.name)));
    $("sampler_name").value = "DPM++ 2M";  // A1111's default; its Automatic schedule is Karras
  }
  $("generate-form").addEventListener("submit", generate);
  $("generate-form").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(e);
    if (e.key === "Escape" && currentJob) cancel();
  });
  $("cancel").addEventListener("click", cancel);
  $("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
  $("reuse").addEventListener("click", () => shownJob && fillForm(shownJob.request));
  $("refresh").addEventListener("click", () => loadGallery(true));
  $("more").addEventListener("click", () => loadGallery(false));
  await loadGallery(true);
  document.body.dataset.ready = "true";
}

init();
