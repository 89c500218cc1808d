// Upscalers: the hires fix's upscaler list, and the upscaling panel (A1111's extras: one picture, bigger).

import { $, element, firstMessage, optional, post, readAsDataURL } from "./api.js";

let upscaleSource = null;  // data: URL of the picture the panel upscales

// Hires upscalers: A1111's latent modes and its upscaler list, each only where the server has the endpoint.
export async function setupUpscalers() {
  const [latent, upscalers] = await Promise.all([optional("/sdapi/v1/latent-upscale-modes"),
                                                 optional("/sdapi/v1/upscalers")]);
  const names = [...(latent ?? []), ...(upscalers ?? [])].map((u) => u.name);
  const picker = $("hr_upscaler");
  if (names.length) {
    picker.replaceChildren(...[...new Set(names)].map((name) => new Option(name, name)));
  } else {
    picker.disabled = true;  // the server's default upscaler: nothing to choose, nothing sent
    $("hr-upscaler-field").hidden = true;
  }
  const models = (upscalers ?? []).filter((u) => u.name !== "None");
  if (!models.length) return false;
  $("upscaler_1").replaceChildren(...models.map((u) => new Option(u.name, u.name)));
  $("upscale-file").addEventListener("change", async () => {
    const file = $("upscale-file").files[0];
    if (file) showUpscaleSource(await readAsDataURL(file));
  });
  $("upscale-run").addEventListener("click", runUpscale);
  $("upscale-panel").hidden = false;
  return true;
}

export function showUpscaleSource(dataURL) {
  upscaleSource = dataURL;
  $("upscale-source").src = dataURL;
  $("upscale-source").hidden = false;
  $("upscale-status").textContent = "";
  $("upscale-panel").scrollIntoView({ block: "nearest" });
  $("upscaler_1").focus();
}

async function runUpscale() {
  if (!upscaleSource) { $("upscale-status").textContent = "Choose a picture first."; return; }
  $("upscale-run").disabled = true;
  $("upscale-status").textContent = "Upscaling…";
  const { ok, body } = await post("/sdapi/v1/extra-single-image", {
    image: upscaleSource, upscaler_1: $("upscaler_1").value, upscaling_resize: Number($("upscaling_resize").value),
  });
  $("upscale-run").disabled = false;
  if (!ok) { $("upscale-status").textContent = firstMessage(body, "the server could not upscale"); return; }
  const url = `data:image/png;base64,${body.image}`;
  const result = $("upscale-result");
  result.src = url;
  await result.decode().catch(() => {});
  $("upscale-result-link").href = url;
  $("upscale-result-link").download = "upscaled.png";
  $("upscale-result-link").hidden = false;
  $("upscale-status").replaceChildren(element("span", {
    textContent: `${result.naturalWidth}×${result.naturalHeight} — click the picture to download it`,
  }));
}
