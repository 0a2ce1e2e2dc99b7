// The service's API as the page calls it: everything comes from this service (/v1/scenes...).

import { $ } from "./dom.js";

/** A scene's URL, or one of its resources' (rest starts with "/"). */
export const sceneUrl = (scene, rest = "") => `v1/scenes/${encodeURIComponent(scene.id)}${rest}`;

/** The JSON of a GET; an Error naming the URL, the status and the service's detail otherwise. */
export async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) {
    let detail = r.statusText;
    try {
      detail = (await r.json()).detail || detail;
    } catch {
      /* not JSON */
    }
    throw new Error(`${url}: ${r.status} ${detail}`);
  }
  return r.json();
}

/** Headers with the token the mapper entered, if any. */
export function authHeaders(extra = {}) {
  const headers = { ...extra };
  if ($("token").value) headers.Authorization = `Bearer ${$("token").value}`;
  return headers;
}

/**
 * A write with the token: body as JSON, or as it is with another content type.
 * Returns { ok, status, answer } (answer: the JSON reply, {} when there is none).
 */
export async function send(url, method, body = undefined, contentType = "application/json") {
  const init = { method, headers: authHeaders(body === undefined ? {} : { "Content-Type": contentType }) };
  if (body !== undefined) init.body = contentType === "application/json" ? JSON.stringify(body) : body;
  const r = await fetch(url, init);
  const answer = await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, answer };
}

/** "<what>: <detail or status><hint>", the hint by status (401: enter the token). */
export function refused(what, reply, hints = {}) {
  const hint = { 401: " (enter the token)", ...hints }[reply.status] || "";
  return `${what}: ${reply.answer.detail || reply.status}${hint}`;
}
