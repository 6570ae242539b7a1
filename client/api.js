// fetch() with the optional access token: sent as a Bearer header on requests and as ?token= on
// URLs the browser loads by itself (the MJPEG <img>, recordings in <video>, downloads).

const STORAGE_KEY = "camcast.token";

// A page under /cameras/<name>/ shows that camera and talks to its routes there; any other page
// talks to the unprefixed routes, which mean the server's first camera.
const CAMERA_PAGE = /^\/cameras\/([^/]+)(?:\/|$)/;

function cameraOfPage() {
  const match = CAMERA_PAGE.exec(location.pathname);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null; // a malformed name: the server answers 404 for it anyway
  }
}

export const pageCamera = cameraOfPage();
const cameraBase = pageCamera === null ? "" : `/cameras/${encodeURIComponent(pageCamera)}`;

// "/api/status" → "/cameras/front/api/status" on front's page, unchanged elsewhere.
export function cameraPath(path) {
  return cameraBase + path;
}

// Where a camera's own routes (and its player) live.
export function cameraRoot(name) {
  return `/cameras/${encodeURIComponent(name)}/`;
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "HttpError";
    this.status = status;
  }
}

function readStored() {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage can be off (privacy settings); the token then lasts until reload
  }
}

function writeStored(token) {
  try {
    if (token) sessionStorage.setItem(STORAGE_KEY, token);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // see readStored
  }
}

export class Api {
  constructor(tokenForm) {
    this.tokenForm = tokenForm;
    this.currentToken = readStored();
    this.declined = false; // the user cancelled the form: do not ask again until they choose to
    this.listeners = new Set();
    this.adoptTokenFromAddress();
  }

  // A link like /?token=… signs in once; the token then leaves the address bar.
  adoptTokenFromAddress() {
    const url = new URL(location.href);
    const token = url.searchParams.get("token");
    if (!token) return;
    this.setToken(token);
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }

  get token() {
    return this.currentToken;
  }

  setToken(token) {
    this.currentToken = token || null;
    writeStored(this.currentToken);
    for (const listener of this.listeners) listener(this.currentToken);
  }

  onTokenChange(listener) {
    this.listeners.add(listener);
  }

  url(path, extra = {}) {
    const url = new URL(path, location.origin);
    for (const [key, value] of Object.entries(extra)) url.searchParams.set(key, String(value));
    if (this.currentToken) url.searchParams.set("token", this.currentToken);
    return url.pathname + url.search;
  }

  withAuth(init) {
    const headers = new Headers(init.headers || {});
    if (this.currentToken) headers.set("Authorization", `Bearer ${this.currentToken}`);
    return { ...init, headers };
  }

  // Ask for a token; concurrent callers share one form.
  async askToken(reason) {
    const token = await this.tokenForm.ask(reason);
    if (token) {
      this.declined = false;
      this.setToken(token);
    } else {
      this.declined = true;
    }
    return token;
  }

  // The user asked to enter a token (the "token" button): ask even after a cancel.
  async promptToken() {
    this.declined = false;
    return this.askToken("Enter the access token for this camera.");
  }

  async fetch(path, init = {}) {
    let response = await fetch(path, this.withAuth(init));
    let tried = false;
    while (response.status === 401 && !this.declined) {
      const sent = this.currentToken;
      const token = await this.askToken(
        tried || sent ? "That token was not accepted. Try again." : "This camera needs an access token.");
      if (!token) break;
      tried = true;
      response = await fetch(path, this.withAuth(init));
    }
    return response;
  }

  // JSON in, JSON out; a non-2xx answer becomes an HttpError carrying the server's message.
  async json(path, init = {}) {
    const response = await this.fetch(path, init);
    if (!response.ok) throw new HttpError(response.status, await errorText(response));
    const type = response.headers.get("Content-Type") || "";
    if (response.status === 204 || !type.includes("json")) return null;
    return response.json();
  }

  async postJson(path, body) {
    return this.json(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }
}

async function errorText(response) {
  let detail = "";
  try {
    const text = await response.text();
    try {
      const parsed = JSON.parse(text);
      detail = parsed.error || parsed.message || text;
    } catch {
      detail = text;
    }
  } catch {
    // no body
  }
  detail = String(detail).trim().slice(0, 200);
  return `${response.status} ${response.statusText || ""}`.trim() + (detail ? `: ${detail}` : "");
}
