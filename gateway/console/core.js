// The console's plumbing: the admin key, calls to the gateway's public API, SSE reading,
// and a small DOM builder (text only through textContent).

const KEY_NAME = "taskgate.adminKey";

export function storedKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_NAME, key);
  else sessionStorage.removeItem(KEY_NAME);
}

/** An API error, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error ? body.error : {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || null;
    this.param = error.param || null;
  }
}

const listeners = { auth: [] };

/** Call `fn(error)` whenever the API answers 401 or 403 (no key, a wrong or non-admin key). */
export function onAuthFailure(fn) {
  listeners.auth.push(fn);
}

function headers(json) {
  const out = { Accept: "application/json" };
  const key = storedKey();
  if (key) out.Authorization = `Bearer ${key}`;
  if (json) out["Content-Type"] = "application/json";
  return out;
}

async function failure(response) {
  const body = await response.json().catch(() => null);
  const error = new ApiError(response.status, body);
  if (response.status === 401 || response.status === 403) {
    for (const fn of listeners.auth) fn(error);
  }
  return error;
}

/** `method path` with an optional JSON body; the parsed JSON answer (null for 204). */
export async function api(method, path, body) {
  const init = { method, headers: headers(body !== undefined), cache: "no-store" };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

/** Stream a chat completion: yields each SSE event's JSON until `[DONE]`. */
export async function* streamChat(body) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { ...headers(true), Accept: "text/event-stream" },
    body: JSON.stringify({ ...body, stream: true }),
    cache: "no-store",
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") return;
          yield JSON.parse(data);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** `el("td", {class: "num", dataset: {x: 1}, onclick: fn}, "text", child)` */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(selector) {
  return document.querySelector(selector);
}

export function number(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

export function when(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return new Date(seconds * 1000).toLocaleTimeString();
}

/** Run `work` with `button` disabled; errors go to `show` (or are rethrown). */
export async function busy(button, work) {
  button.disabled = true;
  try {
    return await work();
  } finally {
    button.disabled = false;
  }
}
