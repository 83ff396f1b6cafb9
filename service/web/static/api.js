// The JSON API as the pages use it: the user's bearer token (kept in sessionStorage,
// so it lasts for the browser tab and no longer), errors turned into readable messages,
// and images fetched with the token so they load whatever DEEPMINER_AUTH says.

const TOKEN_KEY = "deepminer.token";
const NAME_KEY = "deepminer.annotator";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  document.dispatchEvent(new CustomEvent("deepminer:token"));
}

export function getAnnotator() {
  return localStorage.getItem(NAME_KEY) || "";
}

export function setAnnotator(name) {
  if (name) localStorage.setItem(NAME_KEY, name);
  else localStorage.removeItem(NAME_KEY);
}

/** An error answer of the API: `status`, and `code`, `message`, `field` from its `{"error": …}` body. */
export class ApiError extends Error {
  constructor(status, code, message, field, response) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.response = response;
  }

  /** What to tell the user, with the next step where there is one. */
  get advice() {
    if (this.status === 401) {
      return getToken()
        ? `Your token was refused (expired or invalid): ${this.message}. Enter a valid token at the top of the page.`
        : `This needs a token: ${this.message}. Enter your token at the top of the page.`;
    }
    if (this.status === 403) return `Your token may not do this: ${this.message}.`;
    if (this.status === 0) return this.message;
    const where = this.field ? ` (field “${this.field}”)` : "";
    return `${this.message}${where} [${this.status} ${this.code}]`;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const token = getToken();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function toError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: a proxy's page, say. The status line still says what happened.
  }
  const detail = body && body.error ? body.error : {};
  const message = detail.message || `${response.status} ${response.statusText || "error"} from ${response.url}`;
  const error = new ApiError(response.status, detail.code || "http_error", message, detail.field || null, response);
  if (response.status === 401) document.dispatchEvent(new CustomEvent("deepminer:unauthorized", { detail: error }));
  return error;
}

/** fetch() with the token; resolves to the Response when it is 2xx, else throws ApiError. */
export async function request(path, { method = "GET", json, body, headers: extra = {}, signal } = {}) {
  const h = headers(extra);
  if (json !== undefined) {
    h["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers: h, body, signal });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network_error", `The service did not answer (${exc.message}). Is it running?`, null, null);
  }
  if (!response.ok) throw await toError(response);
  return response;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

/** Whether an endpoint exists: a 404/405 without one of the API's own error codes means it is not there. */
export function isMissingEndpoint(error) {
  return error instanceof ApiError && (error.status === 405 || (error.status === 404 && error.code === "not_found"));
}

const imageCache = new Map();

/** An object URL for an image the API serves, fetched with the token (an <img src> could not send it). */
export async function imageURL(path) {
  if (!imageCache.has(path)) {
    const pending = request(path).then(async (r) => URL.createObjectURL(await r.blob()));
    pending.catch(() => imageCache.delete(path));
    imageCache.set(path, pending);
  }
  return imageCache.get(path);
}

/** The survey's vocabularies (BI-RADS categories, answers, length limits), served from annotations/lexicon.py. */
let lexiconPromise = null;
export function lexicon() {
  lexiconPromise ??= getJSON("/ui/lexicon.json");
  return lexiconPromise;
}
