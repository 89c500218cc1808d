// The generation form: which fields this server takes, reading them into a job request, filling them from one,
// keeping the last-used settings across reloads, and showing the server's field errors on their fields.

import { $, element } from "./api.js";

const STORE_KEY = "sdart.settings.v1";
const form = () => $("generate-form");
let schemaFields = new Set();  // the job request's field names on this server (GET /api/v1/request-schema)

export function setSchema(schema) {
  schemaFields = new Set(Object.keys(schema?.properties ?? {}));
  // Controls for fields this server does not take are hidden, so they are never sent.
  for (const node of document.querySelectorAll("[data-needs-field]")) {
    node.hidden = !node.dataset.needsField.split(" ").every((name) => schemaFields.has(name));
  }
  for (const [name, spec] of Object.entries(schema?.properties ?? {})) {
    for (const control of form().querySelectorAll(`[name="${name}"][type="number"]`)) {
      if (spec.maximum !== undefined && !control.max) control.max = spec.maximum;
    }
  }
}

export const serverTakes = (name) => schemaFields.has(name);

// When a control with data-when is sent; `context` says whether a picture and a mask are set.
function applies(condition, context) {
  const hires = !context.picture && $("enable_hr").checked && serverTakes("enable_hr");
  const scaleMode = $("hr-mode-scale").checked;
  return {
    txt2img: !context.picture,
    img2img: Boolean(context.picture),
    inpaint: Boolean(context.picture && context.painting),
    hires,
    "hires-scale": hires && scaleMode,
    "hires-size": hires && !scaleMode,
  }[condition] ?? true;
}

function valueOf(control) {
  if (control.type === "checkbox") return control.checked;
  const text = control.value.trim();
  if (text === "") return undefined;  // empty: the server's default (width/height: the model's own size)
  return control.type === "number" ? Number(text) : text;
}

// {request, sent}: the job fields, and the control each came from (to mark errors on the right one).
export function readForm(context) {
  const request = {};
  const sent = new Map();
  for (const control of form().querySelectorAll("[name]")) {
    const name = control.name;
    if (!serverTakes(name) || control.type === "radio" || control.disabled) continue;
    if (control.dataset.when && !applies(control.dataset.when, context)) continue;
    if (control.id === "enable_hr" && !applies("txt2img", context)) continue;
    const value = valueOf(control);
    if (value === undefined) continue;
    request[name] = value;
    sent.set(name, control);
  }
  if (context.picture) {
    request.init_image = context.picture;
    sent.set("init_image", $("init_image"));
  }
  if (context.mask) {
    request.mask = context.mask;
    sent.set("mask", $("mask-canvas"));
  }
  return { request, sent };
}

// Put a job request's fields (or PNG info's) into the form; returns the names it had no control for.
export function fillForm(request) {
  const missing = [];
  for (const [name, value] of Object.entries(request)) {
    const controls = [...form().querySelectorAll(`[name="${name}"]`)].filter((c) => c.type !== "radio");
    if (!controls.length || value === null || value === undefined) {
      if (value !== null && value !== undefined && !["init_image", "mask"].includes(name)) missing.push(name);
      continue;
    }
    for (const control of controls) {
      if (control.type === "checkbox") control.checked = Boolean(value);
      else if (control.tagName === "SELECT" && ![...control.options].some((o) => o.value === String(value))) {
        missing.push(name);
      } else control.value = value;
    }
  }
  form().dispatchEvent(new Event("change", { bubbles: true }));
  saveSettings();
  return missing;
}

// --- last-used settings -------------------------------------------------------------------------------

export function saveSettings() {
  const kept = {};
  for (const control of form().querySelectorAll("[data-keep]")) {
    kept[control.id] = control.type === "checkbox" || control.type === "radio" ? control.checked : control.value;
  }
  try { localStorage.setItem(STORE_KEY, JSON.stringify(kept)); } catch { /* private mode: nothing kept */ }
}

export function restoreSettings() {
  let kept;
  try { kept = JSON.parse(localStorage.getItem(STORE_KEY) ?? "null"); } catch { kept = null; }
  if (!kept) return;
  for (const [id, value] of Object.entries(kept)) {
    const control = $(id);
    if (!control?.hasAttribute("data-keep")) continue;
    if (control.type === "checkbox" || control.type === "radio") control.checked = Boolean(value);
    else if (control.tagName !== "SELECT" || [...control.options].some((o) => o.value === value)) control.value = value;
  }
}

export function forgetSettings() {
  try { localStorage.removeItem(STORE_KEY); } catch { /* nothing kept anyway */ }
}

// --- errors -------------------------------------------------------------------------------------------

export function clearErrors() {
  for (const node of form().querySelectorAll(".field-error[data-for]")) node.remove();
  for (const node of document.querySelectorAll("[aria-invalid]")) {
    node.removeAttribute("aria-invalid");
    node.removeAttribute("aria-describedby");
  }
  $("form-errors").textContent = "";
}

// The server's `detail` (FastAPI's shape: [{loc, msg, input}]): each message beside the control its loc names,
// and all of them in the summary. `sent` maps field names to the controls they came from.
export function showErrors(detail, sent = new Map()) {
  clearErrors();
  const errors = Array.isArray(detail) ? detail : [{ loc: [], msg: String(detail ?? "the server refused") }];
  const lines = errors.map((error) => {
    const loc = (error.loc ?? []).filter((part) => part !== "body");
    const name = loc.find((part) => sent.has(part) || form().querySelector(`[name="${part}"]`)) ?? loc[0];
    const control = sent.get(name) ?? form().querySelector(`[name="${name}"]`) ?? (name === "model" ? $("model") : null);
    if (control) markField(control, name, error.msg);
    return loc.length ? `${loc.join(".")}: ${error.msg}` : error.msg;
  });
  $("form-errors").textContent = lines.join("\n");
  form().querySelector("[aria-invalid=true]")?.focus();
}

export function markField(control, name, message) {
  const closed = control.closest("details:not([open])");
  if (closed) closed.open = true;
  const note = element("p", { className: "field-error", id: `error-${name}`, textContent: message });
  note.dataset.for = name;
  (control.closest(".row, .paint-stage") ?? control).after(note);
  control.setAttribute("aria-invalid", "true");
  control.setAttribute("aria-describedby", note.id);
}
