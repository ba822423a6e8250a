// The JSON API (CONTRACT.md, "Read state and the JSON API"): list, and mark read.

export const REQUEST_TIMEOUT = 10000;

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

async function request(url, options) {
  const controller = new AbortController();
  const deadline = setTimeout(() => controller.abort(), REQUEST_TIMEOUT);
  let response;
  try {
    response = await fetch(url, {
      credentials: 'same-origin',
      cache: 'no-store',
      ...options,
      headers: { Accept: 'application/json', ...(options.headers || {}) },
      signal: controller.signal,
    });
  } catch {
    throw new ApiError('The server did not answer; try again shortly.', 0);
  } finally {
    clearTimeout(deadline);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const message = data && typeof data.error === 'string' ? data.error : `The server answered ${response.status}.`;
    throw new ApiError(message, response.status);
  }
  if (!data || typeof data !== 'object') throw new ApiError('The server sent no JSON.', response.status);
  return data;
}

// A page of notifications, newest first: {notifications, unread, next}. `url` may be a
// `next` URL from a previous page (its parameters are kept).
export async function listNotifications(url, { before, limit } = {}) {
  const target = new URL(url, document.baseURI);
  if (before) target.searchParams.set('before', String(before));
  if (limit) target.searchParams.set('limit', String(limit));
  const data = await request(target, { method: 'GET' });
  return {
    notifications: Array.isArray(data.notifications) ? data.notifications : [],
    unread: Number.isSafeInteger(data.unread) ? data.unread : null,
    next: typeof data.next === 'string' && data.next ? data.next : null,
  };
}

// Mark notifications read: `change` is {ids: [...]} or {all: true}. Resolves to the unread
// count. `csrfToken` comes from the template ({% csrf_token %}'s value), which works where
// the site makes the CSRF cookie HttpOnly or keeps the token in the session.
export async function markRead(url, csrfToken, change, { keepalive = false } = {}) {
  const data = await request(new URL(url, document.baseURI), {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-CSRFToken': csrfToken },
    body: JSON.stringify(change),
    keepalive,
  });
  return Number.isSafeInteger(data.unread) ? data.unread : null;
}
