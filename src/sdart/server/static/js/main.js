// The sdart page: wires the form, the add-on pickers, the picture and mask, PNG info, the result viewer, the
// queue and the history to the server's API and its one event stream. Plain ES modules; no build step.

import { $, api, optional, post, urlAsDataURL } from "./api.js";
import { loadModels, onModelEvent, setupBrowsers, setupModelPicker, setupVaePicker } from "./addons.js";
import { clearErrors, fillForm, forgetSettings, markField, readForm, restoreSettings, saveSettings, setSchema,
         showErrors } from "./form.js";
import { loadHistory, neighbour, setupHistory } from "./history.js";
import { currentPicture, maskDataURL, painting, setPicture, setupPicture } from "./inpaint.js";
import { connect } from "./live.js";
import { setupPngInfo } from "./pnginfo.js";
import { onQueueProgress, refreshQueue, setupQueue } from "./queue.js";
import { setupUpscalers, showUpscaleSource } from "./upscale.js";
import { clearViewer, setupViewer, showJob, showPreview, shownJob } from "./viewer.js";

const DEFAULT_SAMPLER = "DPM++ 2M";  // A1111's default; its Automatic schedule is Karras
let currentJob = null;  // the job this page submitted and follows
const ownJobs = new Set();  // every job this page submitted (the queue view tells them from other clients')
let serverModel = "";

// --- generating -------------------------------------------------------------------------------------------

async function generate(event) {
  event?.preventDefault();
  clearErrors();
  if (!$("prompt").value.trim()) { markField($("prompt"), "prompt", "write a prompt first"); $("prompt").focus(); return; }
  const mask = painting() ? maskDataURL() : null;
  if (painting() && !mask) {
    markField($("mask-canvas"), "mask", "paint where to redraw, or untick “Paint a mask”");
    return;
  }
  const { request, sent } = readForm({ picture: currentPicture(), painting: painting(), mask });
  saveSettings();
  $("generate").disabled = true;
  const { ok, body } = await post("/api/v1/jobs", request);
  $("generate").disabled = false;
  if (!ok) { showErrors(body?.detail ?? "the server refused the request", sent); return; }
  ownJobs.add(body.id);
  follow(body.id, body.position);
}

function setProgress(fraction, text) {
  const percent = Math.round(fraction * 100);
  $("progress").setAttribute("aria-valuenow", String(percent));
  $("progress").querySelector(".bar").style.width = `${percent}%`;
  $("progress-text").textContent = text;
}

async function follow(jobId, position) {
  currentJob = jobId;
  $("cancel").disabled = false;
  setProgress(0, position ? `Queued: ${position} job(s) ahead` : "Starting…");
  await syncJob();  // a short job may have ended before its id came back
}

// Re-read the followed job: after submitting, and after the event stream was lost and found again.
async function syncJob() {
  const jobId = currentJob;
  if (!jobId) return;
  const { ok, body } = await api(`/api/v1/jobs/${jobId}`);
  if (!ok || jobId !== currentJob) return;
  if (["succeeded", "failed", "cancelled"].includes(body.status)) finishJob(body);
  else if (body.status === "queued") setProgress(0, `Queued: ${body.position} job(s) ahead`);
  else if (body.images.length) showJob(body);
}

function finishJob(job) {
  if (job.id !== currentJob) return;
  currentJob = null;
  $("cancel").disabled = true;
  const labels = { succeeded: "Done", cancelled: "Cancelled", failed: `Failed: ${job.error}` };
  setProgress(job.status === "succeeded" ? 1 : job.progress, labels[job.status] ?? job.status);
  showJob(job);
}

let previewBusy = false;  // one preview request at a time: on a GPU, steps come faster than round trips

async function fetchPreview(jobId) {
  if (previewBusy) return;
  previewBusy = true;
  try {
    const response = await fetch(`/api/v1/jobs/${jobId}/preview`);
    const picture = response.status === 200 ? await response.blob() : null;
    if (picture && jobId === currentJob) showPreview(picture);
  } catch {
    // the server is going away (its last events can outrun it); the connection line says so
  } finally {
    previewBusy = false;
  }
}

async function cancel() {
  if (!currentJob) return;
  $("progress-text").textContent = "Cancelling…";
  await post(`/api/v1/jobs/${currentJob}/cancel`, {});
}

// --- what the event stream says -------------------------------------------------------------------------

let historyTimer = null;
const reloadHistory = () => { clearTimeout(historyTimer); historyTimer = setTimeout(() => loadHistory(), 200); };

const handlers = {
  hello(hello) { serverModel = hello.model; showCounts(hello.queue); refreshQueue(); },
  queued() { refreshQueue(); },
  started(event) { refreshQueue(); if (event.job === currentJob) setProgress(0, "Starting…"); },
  progress(event) {
    onQueueProgress(event);
    if (event.job !== currentJob) return;
    const batch = event.iterations > 1 ? `batch ${event.iteration + 1}/${event.iterations} · ` : "";
    const eta = event.eta_s != null ? ` · ${event.eta_s.toFixed(1)} s left` : "";
    setProgress(event.fraction, `${batch}step ${event.step}/${event.total}${eta}`);
    fetchPreview(event.job);
  },
  async image(event) {
    if (event.job !== currentJob) return;
    const { ok, body } = await api(`/api/v1/jobs/${event.job}`);
    if (ok && event.job === currentJob) showJob(body);
  },
  async done(event) {
    refreshQueue();
    reloadHistory();
    if (event.job !== currentJob) return;
    const { ok, body } = await api(`/api/v1/jobs/${event.job}`);
    if (ok) finishJob(body);
  },
  deleted(event) {
    reloadHistory();
    if (shownJob()?.id === event.job) clearViewer("That job was deleted.");
  },
  model(event) { onModelEvent(event); if (event.state === "loaded") serverModel = event.name; },
  reconnected() { refreshQueue(); loadHistory(); syncJob(); },
};

function showCounts(counts) {
  $("server-status").textContent = `${serverModel} · ${counts.queued} queued · ${counts.running} running`;
}

// --- sending a result elsewhere ---------------------------------------------------------------------------

async function sendTo(target, image) {
  let picture;
  try {
    picture = await urlAsDataURL(image.url);
  } catch (error) {
    $("progress-text").textContent = `Could not fetch the picture: ${error.message}`;
    return;
  }
  if (target === "upscale") { showUpscaleSource(picture); return; }
  reuse(shownJob());
  await setPicture(picture, { inpaint: target === "inpaint" });
  updateForm();
  (target === "inpaint" ? $("mask-canvas") : $("denoising_strength")).focus();
}

function reuse(job) {
  const { model, init_image, mask, ...fields } = job.request;  // pictures are not the job's to give back
  const missing = fillForm(fields);
  $("form-notice").textContent = missing.length ? `Not applied (no such control here): ${missing.join(", ")}` : "";
  $("prompt").focus();
}

function applyPngInfo(info) {
  const { model, ...fields } = info.request;
  const missing = fillForm(fields);
  const unapplied = [...Object.keys(info.not_applied), ...missing];
  $("form-notice").textContent = unapplied.length ? `Filled from the PNG; not applied: ${unapplied.join(", ")}`
                                                  : "Filled from the PNG.";
  if (model && model !== $("model").value) {
    $("model").value = model;
    $("model").dispatchEvent(new Event("change"));
  }
  $("prompt").focus();
}

// --- the form's own behaviour -----------------------------------------------------------------------------

function updateForm() {
  const picture = Boolean(currentPicture());
  $("enable_hr").disabled = picture;
  $("hires-img2img-note").hidden = !picture;
  $("hires-options").hidden = picture || !$("enable_hr").checked;
  const mode = $("hr-mode-scale").checked ? "scale" : "size";
  for (const node of document.querySelectorAll("#hires-options [data-mode]")) node.hidden = node.dataset.mode !== mode;
}

async function setupSamplers() {
  const { ok, body } = await api("/api/v1/samplers");
  if (!ok) return;
  $("sampler_name").replaceChildren(...body.samplers.map((s) => new Option(s.name, s.name)));
  if (body.samplers.some((s) => s.name === DEFAULT_SAMPLER)) $("sampler_name").value = DEFAULT_SAMPLER;
  $("scheduler").replaceChildren(...body.schedule_types.map((name) => new Option(name, name)));
}

async function init() {
  setSchema(await optional("/api/v1/request-schema"));
  await Promise.all([setupSamplers(), loadModels(), setupVaePicker(), setupBrowsers()]);
  const upscaling = await setupUpscalers();
  for (const button of document.querySelectorAll('[data-send="upscale"]')) button.hidden = !upscaling;
  restoreSettings();
  updateForm();

  const form = $("generate-form");
  let saveTimer = null;
  form.addEventListener("submit", generate);
  form.addEventListener("change", () => { updateForm(); saveSettings(); });
  form.addEventListener("input", () => { clearTimeout(saveTimer); saveTimer = setTimeout(saveSettings, 300); });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate(e);
    if (e.key === "Escape" && currentJob) cancel();
  });
  $("cancel").addEventListener("click", cancel);
  $("random-seed").addEventListener("click", () => { $("seed").value = -1; saveSettings(); });
  $("reset-settings").addEventListener("click", () => { forgetSettings(); location.reload(); });
  setupModelPicker();
  setupPicture(updateForm);
  setupPngInfo(applyPngInfo);
  setupViewer({ send: sendTo, reuse, neighbour, deleted: () => loadHistory() });
  setupHistory((job) => { showJob(job); $("open-full").scrollIntoView({ block: "nearest" }); });
  setupQueue(showCounts, (id) => ownJobs.has(id));
  connect(handlers);
  await Promise.all([loadHistory(0), refreshQueue()]);
  document.body.dataset.ready = "true";
}

init();
