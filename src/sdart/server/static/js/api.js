// Talking to the server: JSON requests, optional endpoints, pictures as data: URLs.

export const $ = (id) => document.getElementById(id);

// {ok, status, body}: body is the parsed JSON (or null); a network failure answers status 0.
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  } catch (error) {
    return { ok: false, status: 0, body: { detail: `the server is unreachable (${error.message})` } };
  }
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  return { ok: response.ok, status: response.status, body };
}

export const post = (path, body) => api(path, { method: "POST", body: JSON.stringify(body) });

// The body of an endpoint this server may not have: null when it answers 404 (or anything but success).
export async function optional(path) {
  const { ok, body } = await api(path);
  return ok ? body : null;
}

export function readAsDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export async function urlAsDataURL(url) {
  const response = await fetch(url);
  return readAsDataURL(await response.blob());
}

// The first error message of a refusal, for a status line.
export function firstMessage(body, fallback = "the server refused") {
  const detail = body?.detail;
  if (Array.isArray(detail)) return detail.map((error) => error.msg).join("; ");
  return typeof detail === "string" ? detail : fallback;
}

export function element(tag, properties = {}, children = []) {
  const node = Object.assign(document.createElement(tag), properties);
  node.append(...children);
  return node;
}
