// The page's only door to the API: JSON calls, the upload with progress, media URLs, the API key.
// Every failure becomes an ApiError carrying the API's own {code, message}.

const KEY_STORE = "r2.apiKey";
let apiKey = localStorage.getItem(KEY_STORE) || "";
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() { return apiKey; }

export function setKey(key) {
  apiKey = key.trim();
  if (apiKey) localStorage.setItem(KEY_STORE, apiKey); else localStorage.removeItem(KEY_STORE);
}

// Called with every ApiError (the page shows it, and shows the key field on 401).
export function onError(listener) { listeners.add(listener); }

function authHeaders() { return apiKey ? { "X-API-Key": apiKey } : {}; }

async function errorOf(response) {
  let code = `http_${response.status}`, message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(response.status, code, message);
}

function report(err) {
  const e = err instanceof ApiError ? err : new ApiError(0, "network_error", String(err.message || err));
  listeners.forEach((l) => l(e));
  return e;
}

// One JSON call; resolves to {status, body}, rejects with an ApiError.
export async function call(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: { ...authHeaders(), ...(body === undefined ? {} : { "Content-Type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw report(err);
  }
  if (!response.ok) throw report(await errorOf(response));
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

export const get = (path) => call("GET", path).then((r) => r.body);

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// An answer route: 202 means "repeat the same request" after Retry-After seconds.
export async function answer(path, body, onWait) {
  for (;;) {
    const { status, body: out } = await call("POST", path, body);
    if (status !== 202) return out;
    if (onWait) onWait(out);
    await sleep(1000 * Math.max(1, out.retry_after || 1));
  }
}

// Upload with progress (fetch has no upload progress, XHR has). Resolves to the video's status.
export function upload(file, model, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    if (model) form.append("model", model);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/videos");
    Object.entries(authHeaders()).forEach(([k, v]) => xhr.setRequestHeader(k, v));
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      const err = body && body.error ? body.error : { code: `http_${xhr.status}`, message: xhr.statusText };
      reject(report(new ApiError(xhr.status, err.code, err.message)));
    };
    xhr.onerror = () => reject(report(new ApiError(0, "network_error", "the upload could not reach the API")));
    xhr.send(form);
  });
}

// A URL a <video> or <img> can load: the route itself (the browser streams it with Range requests). Such an
// element cannot send a header, so with a key on, the media routes take it as ?api_key=.
export function mediaUrl(path) {
  if (!apiKey) return path;
  return `${path}${path.includes("?") ? "&" : "?"}api_key=${encodeURIComponent(apiKey)}`;
}
