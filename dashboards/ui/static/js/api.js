// The JSON API client of the web UI. The bearer token lives in this tab's sessionStorage only:
// it is sent in the Authorization header, never put in a URL, never logged.

const TOKEN_KEY = "traceward.token";
const SESSION_KEY = "traceward.session";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  sessionStorage.removeItem(SESSION_KEY);
}

export function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(SESSION_KEY);
}

export function cachedSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

export function cacheSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

/** An error answer of the API, in its envelope {error: {code, message, details, retryable}}. */
export class ApiError extends Error {
  constructor(status, body) {
    const env = (body && body.error) || {};
    super(env.message || `HTTP ${status}`);
    this.status = status;
    this.code = env.code || "error";
    this.details = env.details || null;
    this.retryable = Boolean(env.retryable);
  }

  /** The route itself is missing (not yet on this server), as opposed to a missing resource. */
  get unavailable() {
    return this.status === 405 || this.status === 501 ||
      (this.status === 404 && /^not found$/i.test(this.message.trim()));
  }
}

/** The login page URL that brings the user back here afterwards. */
export function loginUrl() {
  const next = location.pathname + location.search + location.hash;
  return `/ui/login?next=${encodeURIComponent(next)}`;
}

export function buildUrl(path, params) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
  }
  return url;
}

function authHeaders(extra) {
  const headers = { Accept: "application/json", ...extra };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

/**
 * Call the API; resolves to the decoded JSON body, rejects with an ApiError.
 * A 401 sends the user to the sign-in page (the token expired or was revoked).
 */
export async function api(path, { params, method = "GET", body, signal, redirectOn401 = true } = {}) {
  const init = { method, headers: authHeaders(), signal, credentials: "omit", cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(buildUrl(path, params), init);
  const text = await resp.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { raw: text };
    }
  }
  if (!resp.ok) {
    if (resp.status === 401 && redirectOn401) {
      signOut();
      location.assign(loginUrl());
    }
    throw new ApiError(resp.status, data);
  }
  return data;
}

/** A streaming GET (Server-Sent Events) with the bearer header; EventSource can't send one. */
export function openStream(path, { params, lastEventId, signal } = {}) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId) extra["Last-Event-ID"] = lastEventId;
  return fetch(buildUrl(path, params), { headers: authHeaders(extra), signal, credentials: "omit", cache: "no-store" });
}
