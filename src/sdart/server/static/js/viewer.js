// The result: the job's images large, its parameters, what to do with it (reuse, send to img2img, inpainting
// or upscaling, delete), and a full-size view with zoom, next/previous, download and copy.

import { $, api, element, firstMessage } from "./api.js";

const ZOOMS = ["fit", 1, 2, 4, 8];
let shown = null;         // the job in the viewer
let shownIndex = 0;
let zoom = "fit";
let hooks = { send() {}, reuse() {}, deleted() {}, neighbour: () => null };

export const shownJob = () => shown;

export function setupViewer(callbacks) {
  hooks = { ...hooks, ...callbacks };
  $("open-full").addEventListener("click", () => openLightbox(shownIndex));
  $("reuse").addEventListener("click", () => shown && hooks.reuse(shown));
  for (const button of document.querySelectorAll("[data-send]")) {
    button.addEventListener("click", () => shown?.images.length && hooks.send(button.dataset.send, shown.images[shownIndex]));
  }
  $("delete-job").addEventListener("click", deleteShown);
  $("lb-close").addEventListener("click", () => $("lightbox").close());
  $("lb-prev").addEventListener("click", () => step(-1));
  $("lb-next").addEventListener("click", () => step(1));
  $("lb-zoom-in").addEventListener("click", () => setZoom(1));
  $("lb-zoom-out").addEventListener("click", () => setZoom(-1));
  $("lb-fit").addEventListener("click", () => { zoom = "fit"; applyZoom(); });
  $("lb-copy").addEventListener("click", copyParameters);
  $("lightbox").addEventListener("keydown", (event) => {
    const keys = { ArrowLeft: () => step(-1), ArrowRight: () => step(1), "+": () => setZoom(1), "=": () => setZoom(1),
                   "-": () => setZoom(-1), 0: () => { zoom = "fit"; applyZoom(); } };
    if (keys[event.key] && !event.ctrlKey && !event.metaKey) { keys[event.key](); event.preventDefault(); }
  });
}

export function showJob(job, index = 0) {
  shown = job;
  $("result-thumbs").replaceChildren(...(job.images.length > 1 ? job.images.map((image, i) => {
    const button = element("button", { type: "button", innerHTML: `<img src="${image.url}" alt="">` });
    button.setAttribute("aria-label", `Image ${i + 1}, seed ${image.seed}`);
    button.addEventListener("click", () => showImage(i));
    return button;
  }) : []));
  $("result-details").hidden = false;
  $("result-actions").hidden = false;
  for (const button of document.querySelectorAll("[data-send]")) button.disabled = !job.images.length;
  $("delete-job").disabled = !["succeeded", "failed", "cancelled"].includes(job.status);
  if (job.images.length) {
    showImage(Math.min(index, job.images.length - 1));
  } else {
    $("open-full").hidden = true;
    $("placeholder").hidden = false;
    $("placeholder").textContent = job.error ? `Failed: ${job.error}` : `No image (${job.status})`;
    $("result-params").textContent = JSON.stringify(job.request, null, 2);
  }
}

function showImage(index) {
  shownIndex = index;
  const image = shown.images[index];
  const picture = $("result-image");
  picture.classList.remove("preview");
  picture.src = image.url;
  picture.alt = `${shown.request.prompt} (seed ${image.seed})`;
  $("open-full").hidden = false;
  $("placeholder").hidden = true;
  $("result-params").textContent = image.infotext;
  for (const [i, thumb] of [...$("result-thumbs").children].entries()) thumb.setAttribute("aria-pressed", String(i === index));
}

// The live preview of a running job (latent size, shown scaled up).
export function showPreview(blob) {
  const picture = $("result-image");
  if (picture.dataset.previewUrl) URL.revokeObjectURL(picture.dataset.previewUrl);
  picture.dataset.previewUrl = URL.createObjectURL(blob);
  picture.src = picture.dataset.previewUrl;
  picture.alt = "Live preview of the running job";
  picture.classList.add("preview");
  $("open-full").hidden = false;
  $("placeholder").hidden = true;
}

export function clearViewer(message = "Your image appears here.") {
  shown = null;
  $("open-full").hidden = true;
  $("placeholder").hidden = false;
  $("placeholder").textContent = message;
  $("result-thumbs").replaceChildren();
  $("result-details").hidden = true;
  $("result-actions").hidden = true;
}

async function deleteShown() {
  if (!shown) return;
  const job = shown;
  const { ok, body } = await api(`/api/v1/jobs/${job.id}`, { method: "DELETE" });
  if (!ok) { $("progress-text").textContent = `Not deleted: ${firstMessage(body)}`; return; }
  clearViewer(`Deleted the job and its ${body.images} image(s).`);
  hooks.deleted(job.id);
}

// --- full-size view -------------------------------------------------------------------------------------

function openLightbox(index) {
  if (!shown?.images.length) return;
  showInLightbox(index);
  if (!$("lightbox").open) $("lightbox").showModal();
  $("lb-next").focus();
}

function showInLightbox(index) {
  shownIndex = index;
  const image = shown.images[index];
  $("lb-image").src = image.url;
  $("lb-image").alt = `${shown.request.prompt} (seed ${image.seed})`;
  $("lb-download").href = image.url;
  $("lb-download").download = `sdart-${image.seed}.png`;
  $("lb-info").textContent = `${index + 1} / ${shown.images.length} · seed ${image.seed}`;
  applyZoom();
}

// Next/previous image of the job; past its first or last, the neighbouring job in the history.
function step(direction) {
  const index = shownIndex + direction;
  if (index >= 0 && index < shown.images.length) { showInLightbox(index); showImage(index); return; }
  const next = hooks.neighbour(shown, direction);
  if (!next) return;
  showJob(next, direction > 0 ? 0 : next.images.length - 1);
  showInLightbox(shownIndex);
}

function setZoom(direction) {
  const at = ZOOMS.indexOf(zoom);
  zoom = ZOOMS[Math.min(ZOOMS.length - 1, Math.max(0, at + direction))];
  applyZoom();
}

function applyZoom() {
  const image = $("lb-image");
  image.classList.toggle("fit", zoom === "fit");
  const width = image.naturalWidth || shown?.request.width || 0;
  image.style.width = zoom === "fit" ? "" : `${width * zoom}px`;
  $("lb-zoom").textContent = zoom === "fit" ? "fitted" : `${zoom * 100}%`;
  if (!image.complete) image.addEventListener("load", applyZoom, { once: true });
}

async function copyParameters() {
  const text = shown?.images[shownIndex]?.infotext ?? "";
  try {
    await navigator.clipboard.writeText(text);
  } catch {  // no clipboard permission (plain http on another host): select and copy the old way
    const scratch = element("textarea", { value: text });
    $("lightbox").append(scratch);
    scratch.select();
    document.execCommand("copy");
    scratch.remove();
  }
  $("lb-info").textContent = "Parameters copied";
}
