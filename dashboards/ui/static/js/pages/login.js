// Sign in: check the pasted key or JWT against the API, keep it in sessionStorage, go back where the user was.

import { ApiError, cacheSession, setToken, signOut } from "../api.js";

const form = document.getElementById("login-form");
const input = document.getElementById("token");
const error = document.getElementById("login-error");
const params = new URLSearchParams(location.search);

/** Only paths inside the UI: never an open redirect to another site. */
function nextPath() {
  const next = params.get("next") || "/ui";
  return /^\/ui(\/|$|\?)/.test(next) && !next.startsWith("//") ? next : "/ui";
}

function showError(message) {
  error.textContent = message;
  error.hidden = false;
  input.focus();
}

async function whoIs(token) {
  const resp = await fetch("/ui/session", {
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" }, credentials: "omit", cache: "no-store",
  });
  const body = await resp.json().catch(() => null);
  if (!resp.ok) throw new ApiError(resp.status, body);
  return body;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const token = input.value.trim();
  if (!token) return showError("Paste an API key or a JWT.");
  const button = document.getElementById("login-submit");
  button.disabled = true;
  try {
    const session = await whoIs(token);
    setToken(token);
    cacheSession(session);
    input.value = "";
    location.assign(nextPath());
  } catch (err) {
    signOut();
    if (err.status === 401) showError(`Not accepted: ${err.message}`);
    else if (err.status === 403) showError("This credential can't read (an ingest key?). Use a viewer, approver or admin key.");
    else showError(err.message || "Sign-in failed.");
  } finally {
    button.disabled = false;
  }
});

document.getElementById("show-token").addEventListener("change", (event) => {
  input.type = event.target.checked ? "text" : "password";
});

if (params.get("denied")) showError("That credential can't read. Use a viewer, approver or admin key.");
input.focus();
