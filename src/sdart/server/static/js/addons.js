// The model picker, the VAE picker, and the LoRA and embedding browsers that write into the prompt.

import { $, api, element, firstMessage, optional, post } from "./api.js";
import { markField, serverTakes } from "./form.js";

let loadedModel = null;
let ownSwitch = null;       // the model this page asked for, until the server's stream says how it went
let lastPrompt = "prompt";  // the prompt box a browser writes into: the one last focused

// --- models ---------------------------------------------------------------------------------------------

export async function loadModels() {
  const { ok, body } = await api("/api/v1/models");
  if (!ok) return;
  $("model").replaceChildren(...body.map((m) => new Option(m.name, m.name)));
  loadedModel = body.find((m) => m.loaded)?.name ?? null;
  if (loadedModel) $("model").value = loadedModel;
}

export function setupModelPicker() {
  $("model").addEventListener("change", () => switchModel($("model").value));
}

// Switching answers when the model is loaded: the picker waits, saying for how long; the server refuses
// while jobs run or wait, and the picker goes back to the loaded model with the reason beside it.
async function switchModel(name) {
  if (name === loadedModel) return;
  ownSwitch = name;
  const picker = $("model");
  const started = performance.now();
  const tick = () => { $("model-status").textContent = `Loading ${name}… ${((performance.now() - started) / 1000).toFixed(0)} s`; };
  tick();
  const timer = setInterval(tick, 500);
  picker.disabled = true;
  $("model-status").classList.add("busy");
  document.querySelector('.field-error[data-for="model"]')?.remove();
  picker.removeAttribute("aria-invalid");
  const { ok, body } = await post("/api/v1/model", { name });
  clearInterval(timer);
  picker.disabled = false;
  $("model-status").classList.remove("busy");
  if (ok) {
    loadedModel = body.name;
    $("model-status").textContent = body.switched ? `${body.name} loaded in ${body.load_s.toFixed(1)} s` : "";
  } else {
    ownSwitch = null;  // refused: no event follows
    picker.value = loadedModel;
    $("model-status").textContent = "";
    markField(picker, "model", firstMessage(body, "the server could not switch models"));
  }
  picker.focus();
}

// A switch by another client (or tab), from the server's event stream; this page's own is told by its answer.
export function onModelEvent(event) {
  if (event.name === ownSwitch) {
    if (event.state !== "loading") ownSwitch = null;
    return;
  }
  if (event.state === "loading") {
    $("model-status").textContent = `Loading ${event.name} (asked by another client)…`;
  } else if (event.state === "loaded") {
    loadModels().then(() => { $("model-status").textContent = `${event.name} is loaded (switched by another client)`; });
  } else if (event.state === "failed") {
    $("model-status").textContent = `Loading ${event.name} failed: ${event.error}`;
  }
}

// --- VAE ------------------------------------------------------------------------------------------------

// A1111's sd-vae list; shown only when the server has VAEs. A job field carries the choice where the server
// has one; otherwise it is the server's option, as in A1111's settings.
export async function setupVaePicker() {
  const vaes = await optional("/sdapi/v1/sd-vae");
  if (!Array.isArray(vaes) || !vaes.length) return;
  const picker = $("vae");
  picker.replaceChildren(new Option("Automatic", "Automatic"), ...vaes.map((v) => new Option(v.model_name, v.model_name)));
  const field = ["sd_vae", "vae"].find(serverTakes);
  if (field) {
    picker.name = field;
    picker.dataset.keep = "";
  } else {
    const options = await optional("/sdapi/v1/options");
    if (options?.sd_vae) picker.value = options.sd_vae;
    picker.addEventListener("change", async () => {
      const { ok, body } = await post("/sdapi/v1/options", { sd_vae: picker.value });
      if (!ok) markField(picker, "vae", firstMessage(body));
    });
  }
  $("vae-field").hidden = false;
}

// --- LoRA and embedding browsers ------------------------------------------------------------------------

export async function setupBrowsers() {
  for (const id of ["prompt", "negative_prompt"]) $(id).addEventListener("focus", () => { lastPrompt = id; });
  const [loras, embeddings] = await Promise.all([optional("/sdapi/v1/loras"), optional("/sdapi/v1/embeddings")]);
  if (Array.isArray(loras)) {
    $("lora-button").hidden = false;
    $("lora-button").addEventListener("click", async () => {
      const fresh = (await optional("/sdapi/v1/loras")) ?? loras;
      openBrowser("LoRA", fresh.map((lora) => ({
        label: lora.name, detail: lora.alias && lora.alias !== lora.name ? lora.alias : "",
        insert: `<lora:${lora.name}:1>`,
      })));
    });
  }
  if (embeddings?.loaded) {
    $("embedding-button").hidden = false;
    $("embedding-button").addEventListener("click", async () => {
      const fresh = (await optional("/sdapi/v1/embeddings")) ?? embeddings;
      const describe = (e) => [e.vectors && `${e.vectors} vector(s)`, e.step && `step ${e.step}`].filter(Boolean).join(", ");
      openBrowser("Embeddings", [
        ...Object.entries(fresh.loaded ?? {}).map(([name, e]) => ({ label: name, detail: describe(e), insert: name })),
        ...Object.entries(fresh.skipped ?? {}).map(([name]) => ({ label: name, detail: "does not fit this model",
                                                                    disabled: true })),
      ]);
    });
  }
  $("addon-filter").addEventListener("input", filterBrowser);
  $("addon-close").addEventListener("click", () => $("addon-browser").close());
}

function openBrowser(title, items) {
  $("addon-title").textContent = title;
  $("addon-filter").value = "";
  $("addon-list").replaceChildren(...items.map((item) => {
    const button = element("button", { type: "button", className: "addon", disabled: Boolean(item.disabled) },
                           [element("span", { className: "name", textContent: item.label }),
                            element("span", { className: "hint", textContent: item.detail })]);
    button.dataset.name = item.label.toLowerCase();
    button.addEventListener("click", () => {
      $("addon-browser").close();
      insertAtCursor($(lastPrompt), item.insert);
    });
    return element("li", {}, [button]);
  }));
  $("addon-empty").hidden = items.length > 0;
  $("addon-browser").showModal();
  $("addon-filter").focus();
}

function filterBrowser() {
  const wanted = $("addon-filter").value.trim().toLowerCase();
  for (const button of $("addon-list").querySelectorAll("button")) {
    button.parentElement.hidden = !button.dataset.name.includes(wanted);
  }
}

// Insert `text` at the box's cursor (replacing a selection), spaced from the words around it.
export function insertAtCursor(box, text) {
  const start = box.selectionStart ?? box.value.length;
  const end = box.selectionEnd ?? start;
  const before = box.value.slice(0, start);
  const after = box.value.slice(end);
  const piece = `${before && !/\s$/.test(before) ? " " : ""}${text}${after && !/^\s/.test(after) ? " " : ""}`;
  box.value = before + piece + after;
  const cursor = before.length + piece.length;
  box.focus();
  box.setSelectionRange(cursor, cursor);
  box.dispatchEvent(new Event("input", { bubbles: true }));
}
