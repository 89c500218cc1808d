// PNG info: drop a PNG anywhere on the page (or pick one) to see its A1111 parameters; "Send to txt2img" fills
// the form with the fields this server takes, and the keys it would not apply are listed, never dropped unsaid.

import { $, element, firstMessage, post, readAsDataURL } from "./api.js";

let info = null;        // the server's answer for the picture shown
let onApply = () => {};

export function setupPngInfo(apply) {
  onApply = apply;
  $("png-info-button").addEventListener("click", () => $("png-info-file").click());
  $("png-info-file").addEventListener("change", () => {
    const file = $("png-info-file").files[0];
    if (file) readPngInfo(file);
    $("png-info-file").value = "";
  });
  $("png-info-apply").addEventListener("click", () => {
    $("png-info").close();
    if (info) onApply(info);
  });
  $("png-info-close").addEventListener("click", () => $("png-info").close());
  let depth = 0;  // dragenter/leave fire for every element crossed; the overlay goes when the count is back at 0
  const carriesFiles = (event) => event.dataTransfer?.types?.includes("Files");
  const onFileInput = (event) => event.target.closest?.('input[type="file"]');
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event) || onFileInput(event)) return;
    depth += 1;
    $("drop-overlay").hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) $("drop-overlay").hidden = true;
  });
  document.addEventListener("dragover", (event) => {
    if (carriesFiles(event) && !onFileInput(event)) event.preventDefault();  // a file input takes its own drops
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event) || onFileInput(event)) return;
    event.preventDefault();
    depth = 0;
    $("drop-overlay").hidden = true;
    const file = event.dataTransfer.files[0];
    if (file) readPngInfo(file);
  });
}

export async function readPngInfo(file) {
  $("png-info-name").textContent = file.name;
  const { ok, body } = await post("/api/v1/png-info", { image: await readAsDataURL(file) });
  info = ok && body.infotext ? body : null;
  const rows = info ? Object.entries(info.parameters) : [];
  $("png-info-table").tBodies[0].replaceChildren(...rows.map(([key, value]) => element("tr", {}, [
    element("th", { scope: "row", textContent: key }), element("td", { textContent: value }),
  ])));
  if (!ok) {
    $("png-info-name").textContent = `${file.name}: ${firstMessage(body, "not a picture the server can read")}`;
  } else if (!info) {
    $("png-info-name").textContent = `${file.name} carries no generation parameters.`;
  }
  showUnapplied(info ? Object.entries(info.not_applied) : []);
  $("png-info-apply").hidden = !info;
  if (!$("png-info").open) $("png-info").showModal();
  (info ? $("png-info-apply") : $("png-info-close")).focus();
}

function showUnapplied(entries) {
  $("png-info-unapplied").hidden = !entries.length;
  $("png-info-unapplied-list").replaceChildren(...entries.map(([key, value]) => element("li", {}, [
    element("strong", { textContent: key }), element("span", { textContent: `: ${value}` }),
  ])));
}
