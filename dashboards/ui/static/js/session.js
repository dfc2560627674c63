// Page bootstrap: require a signed-in tab, show who is signed in, adapt the navigation to the role.

import { api, cacheSession, cachedSession, getToken, loginUrl, signOut } from "./api.js";

function markNav() {
  const current = document.body.dataset.nav;
  for (const link of document.querySelectorAll(".mainnav a[data-nav]")) {
    if (link.dataset.nav === current) link.setAttribute("aria-current", "page");
  }
}

export function can(session, permission) {
  return Boolean(session && session.permissions && session.permissions.includes(permission));
}

function renderSession(session) {
  const box = document.getElementById("session");
  const who = document.getElementById("session-who");
  who.textContent = `${session.actor} · ${session.role} · ${session.tenant_id}`;
  box.hidden = false;
  document.getElementById("sign-out").addEventListener("click", () => {
    signOut();
    location.assign("/ui/login");
  });
  for (const el of document.querySelectorAll("[data-needs]")) {
    el.hidden = !can(session, el.dataset.needs);
  }
}

export async function refreshPendingCount() {
  const badge = document.getElementById("nav-pending");
  try {
    const body = await api("/v1/approvals", { params: { status: "pending", limit: 100 } });
    const n = body.approvals.length;
    badge.textContent = n >= 100 ? "99+" : String(n);
    badge.hidden = n === 0;
    badge.setAttribute("aria-label", `${n} pending`);
  } catch {
    badge.hidden = true;
  }
}

/** Resolve to the session ({role, permissions, tenant_id, actor, …}); redirect to sign-in if there is none. */
export async function startPage() {
  markNav();
  if (!getToken()) {
    location.replace(loginUrl());
    return new Promise(() => {});
  }
  let session = cachedSession();
  if (!session) {
    try {
      session = await api("/ui/session");
    } catch (err) {
      if (err.status === 403) {
        signOut();
        location.replace(`${loginUrl()}&denied=1`);
        return new Promise(() => {});
      }
      throw err;
    }
    cacheSession(session);
  }
  renderSession(session);
  refreshPendingCount();
  return session;
}
