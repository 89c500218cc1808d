// The start picture (img2img) and the inpainting mask painted over it. The mask canvas has the picture's own
// size; painted pixels are opaque, and the job gets them as white on black (A1111: white = redraw).

import { $, readAsDataURL } from "./api.js";

const PAINT = "rgb(255, 45, 111)";  // how painted pixels look over the picture (the canvas is shown half see-through)
let picture = null;                  // data: URL of the start picture, or null
const canvas = () => $("mask-canvas");
const cursor = { x: 0, y: 0 };       // the keyboard brush position, in canvas pixels
let drawing = false;
let last = null;
let onPictureChange = () => {};  // the form re-checks what it sends

export const currentPicture = () => picture;
export const painting = () => Boolean(picture) && $("inpaint").checked;

export function setupPicture(onChange) {
  $("init_image").addEventListener("change", async () => {
    const file = $("init_image").files[0];
    if (file) await setPicture(await readAsDataURL(file));
  });
  $("remove-picture").addEventListener("click", () => { clearPicture(); onChange(); });
  $("inpaint").addEventListener("change", () => { showMaskTools(); onChange(); });
  $("brush-size").addEventListener("input", showBrushSize);
  $("mask-clear").addEventListener("click", clearMask);
  $("mask-invert").addEventListener("click", invertMask);
  $("mask-file").addEventListener("change", async () => {
    const file = $("mask-file").files[0];
    if (file) await loadMask(await readAsDataURL(file));
    $("mask-file").value = "";
  });
  setupPainting();
  showBrushSize();
  onPictureChange = onChange;
}

export async function setPicture(dataURL, { inpaint = false } = {}) {
  const image = $("init-preview");
  await new Promise((resolve, reject) => {
    image.onload = resolve;
    image.onerror = () => reject(new Error("not a picture the browser can show"));
    image.src = dataURL;
  });
  picture = dataURL;
  const c = canvas();
  c.width = image.naturalWidth;
  c.height = image.naturalHeight;
  clearMask();
  $("brush-size").max = Math.max(8, Math.round(Math.max(c.width, c.height) / 2));
  $("brush-size").value = Math.max(1, Math.round(Math.max(c.width, c.height) / 10));
  showBrushSize();
  cursor.x = c.width / 2;
  cursor.y = c.height / 2;
  $("picture-panel").hidden = false;
  if (inpaint) $("inpaint").checked = true;
  showMaskTools();
  onPictureChange();
}

export function clearPicture() {
  picture = null;
  $("init_image").value = "";
  $("inpaint").checked = false;
  $("picture-panel").hidden = true;
  $("init-preview").removeAttribute("src");
}

function showMaskTools() {
  const on = painting();
  canvas().hidden = !on;
  $("mask-tools").hidden = !on;
  $("brush-cursor").hidden = true;
  $("mask-error").hidden = true;
}

function showBrushSize() {
  $("brush-size-value").textContent = `${$("brush-size").value} px`;
}

// --- painting -----------------------------------------------------------------------------------------

function toCanvas(event) {
  const c = canvas();
  const box = c.getBoundingClientRect();
  return { x: (event.clientX - box.left) * (c.width / box.width), y: (event.clientY - box.top) * (c.height / box.height) };
}

function stroke(from, to) {
  const context = canvas().getContext("2d");
  context.globalCompositeOperation = $("brush-erase").checked ? "destination-out" : "source-over";
  context.strokeStyle = context.fillStyle = PAINT;
  context.lineWidth = Number($("brush-size").value);
  context.lineCap = context.lineJoin = "round";
  context.beginPath();
  context.moveTo(from.x, from.y);
  context.lineTo(to.x + 0.01, to.y);  // a zero-length line draws nothing; a dab needs a hair of length
  context.stroke();
}

function setupPainting() {
  const c = canvas();
  c.addEventListener("pointerdown", (event) => {
    c.setPointerCapture(event.pointerId);
    drawing = true;
    last = toCanvas(event);
    stroke(last, last);
  });
  c.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const point = toCanvas(event);
    stroke(last, point);
    last = point;
  });
  const stop = () => { drawing = false; last = null; };
  c.addEventListener("pointerup", stop);
  c.addEventListener("pointercancel", stop);
  // Keyboard: arrows move the brush (Shift: further), Space or Enter paints where it is.
  c.addEventListener("keydown", (event) => {
    const step = Math.max(1, Number($("brush-size").value) / 2) * (event.shiftKey ? 4 : 1);
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key]) {
      cursor.x = Math.min(c.width, Math.max(0, cursor.x + moves[event.key][0]));
      cursor.y = Math.min(c.height, Math.max(0, cursor.y + moves[event.key][1]));
    } else if (event.key === " " || event.key === "Enter") {
      stroke(cursor, cursor);
    } else return;
    event.preventDefault();
    showCursor();
  });
  c.addEventListener("focus", showCursor);
  c.addEventListener("blur", () => { $("brush-cursor").hidden = true; });
}

function showCursor() {
  const c = canvas();
  const scale = c.clientWidth / c.width;
  const size = Number($("brush-size").value) * scale;
  Object.assign($("brush-cursor").style, { width: `${size}px`, height: `${size}px`,
    left: `${c.offsetLeft + cursor.x * scale - size / 2}px`, top: `${c.offsetTop + cursor.y * scale - size / 2}px` });
  $("brush-cursor").hidden = false;
}

function clearMask() {
  const c = canvas();
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

// Every pixel's coverage turned over: painted becomes clear and clear becomes painted.
function invertMask() {
  const c = canvas();
  const context = c.getContext("2d");
  const pixels = context.getImageData(0, 0, c.width, c.height);
  const [r, g, b] = [255, 45, 111];
  for (let i = 0; i < pixels.data.length; i += 4) {
    pixels.data.set([r, g, b, 255 - pixels.data[i + 3]], i);
  }
  context.putImageData(pixels, 0, 0);
}

// A mask file (white = redraw) scaled onto the picture: its light pixels become painted ones.
async function loadMask(dataURL) {
  const image = new Image();
  await new Promise((resolve, reject) => { image.onload = resolve; image.onerror = reject; image.src = dataURL; });
  const c = canvas();
  const context = c.getContext("2d");
  clearMask();
  context.globalCompositeOperation = "source-over";
  context.imageSmoothingEnabled = false;  // a mask scaled to the picture keeps hard edges (nearest pixel)
  context.drawImage(image, 0, 0, c.width, c.height);
  context.imageSmoothingEnabled = true;
  const pixels = context.getImageData(0, 0, c.width, c.height);
  for (let i = 0; i < pixels.data.length; i += 4) {
    const [red, green, blue, alpha] = pixels.data.subarray(i, i + 4);
    const light = (0.299 * red + 0.587 * green + 0.114 * blue) * (alpha / 255);
    pixels.data.set([255, 45, 111, light >= 128 ? 255 : 0], i);
  }
  context.putImageData(pixels, 0, 0);
}

// The mask as the job takes it: a PNG data: URL, white where painted, black elsewhere; null when nothing is
// painted (the caller says so rather than sending an empty mask).
export function maskDataURL() {
  const c = canvas();
  const painted = c.getContext("2d").getImageData(0, 0, c.width, c.height);
  const out = document.createElement("canvas");
  out.width = c.width;
  out.height = c.height;
  const context = out.getContext("2d");
  const pixels = context.createImageData(c.width, c.height);
  let any = false;
  for (let i = 0; i < painted.data.length; i += 4) {
    const value = painted.data[i + 3] >= 128 ? 255 : 0;
    any ||= value === 255;
    pixels.data.set([value, value, value, 255], i);
  }
  if (!any) return null;
  context.putImageData(pixels, 0, 0);
  return out.toDataURL("image/png");
}
