// The header every page shares: who you are (token, and a name when the service runs without
// tokens), where 401/403 answers are explained, and the page's status line.

import { getAnnotator, getToken, setAnnotator, setToken } from "./api.js";

function describe(state) {
  const token = getToken();
  const name = getAnnotator();
  state.textContent = token
    ? `Token set for this tab${name ? `; name ${name}` : ""}.`
    : name
      ? `No token; labelling as ${name} (works only while the service requires no token).`
      : "No token set.";
}

/** Wire the session form in the page header; returns nothing, keeps the stored token and name current. */
export function initSession() {
  const form = document.getElementById("session-form");
  const tokenInput = document.getElementById("session-token");
  const nameInput = document.getElementById("session-name");
  const state = document.getElementById("session-state");
  const forget = document.getElementById("session-forget");
  nameInput.value = getAnnotator();
  describe(state);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (tokenInput.value.trim()) setToken(tokenInput.value.trim());
    tokenInput.value = "";
    setAnnotator(nameInput.value.trim());
    describe(state);
    clearAlert();
    // What failed for want of a valid token is loaded again, now with it; drafts survive the reload.
    if (document.body.dataset.authFailed) location.reload();
  });
  forget.addEventListener("click", () => {
    setToken("");
    describe(state);
  });
  document.addEventListener("deepminer:unauthorized", () => {
    const details = document.getElementById("session");
    if (details && "open" in details) details.open = true;
    tokenInput.focus();
  });
}

/** Show a message in the page's alert region (role=alert, so screen readers announce it). */
export function showAlert(message, kind = "error") {
  const region = document.getElementById("alert");
  region.textContent = message;
  region.dataset.kind = kind;
  region.hidden = !message;
}

export function clearAlert() {
  showAlert("");
}

/** Show an error: ApiError.advice when it has one, else its message. */
export function showError(error, prefix = "") {
  const text = error && error.advice ? error.advice : String(error && error.message ? error.message : error);
  showAlert(prefix ? `${prefix}: ${text}` : text);
}

/** A page's initial load failed: when that was for want of a valid token, signing in reloads the page. */
export function loadFailed(error, prefix) {
  if (error && (error.status === 401 || error.status === 403)) document.body.dataset.authFailed = "true";
  showError(error, prefix);
}

/** Polite, non-blocking news (saved, loaded…) in the page's status line. */
export function announce(message) {
  const status = document.getElementById("status");
  if (status) status.textContent = message;
}

/** Escape text for the few places that build HTML strings. */
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** An element with attributes and children: el("a", {href: "/"}, "text"). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

