// Build the parts of a notification for the page and the bell: text through textContent,
// links through the href property, never markup from data.

export const LEVELS = Object.freeze({
  info: 'Info',
  success: 'Success',
  warning: 'Warning',
  error: 'Error',
});

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

const UNITS = [
  ['year', 365 * 24 * 3600],
  ['month', 30 * 24 * 3600],
  ['week', 7 * 24 * 3600],
  ['day', 24 * 3600],
  ['hour', 3600],
  ['minute', 60],
];

// The value as a notification id, or 0 when it cannot be one.
export function toId(value) {
  const id = typeof value === 'number' || typeof value === 'string' ? Number(value) : NaN;
  return Number.isSafeInteger(id) && id > 0 ? id : 0;
}

// The notification's id, or 0 when the payload has none that can be one.
export function notificationId(payload) {
  return toId(payload?.id);
}

// The ids of a read or deleted event's data, as a set.
export function eventIds(data) {
  return new Set((Array.isArray(data?.ids) ? data.ids : []).map(toId).filter(Boolean));
}

export function levelOf(value) {
  return Object.hasOwn(LEVELS, value) ? value : 'info';
}

// The link to follow, or null: only absolute http(s) URLs and paths on this site (one leading
// slash) become links, whatever the server sent (it refuses everything else too). Whitespace,
// control characters and backslashes, which URL parsers drop or reinterpret, refuse the link.
const UNSAFE_CHARACTER = /[\s\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\\]/;

export function safeHref(url) {
  if (typeof url !== 'string' || url === '' || UNSAFE_CHARACTER.test(url)) return null;
  const sitePath = url.startsWith('/') && !url.startsWith('//');
  if (!sitePath && !/^https?:\/\//i.test(url)) return null;
  let parsed;
  try {
    parsed = new URL(url, document.baseURI);
  } catch {
    return null;
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
  return sitePath ? url : parsed.href;
}

// A payload from the stream, the API or a relay, with every field of the expected type.
export function normalize(payload) {
  return {
    id: notificationId(payload),
    text: String(payload?.text ?? ''),
    created: String(payload?.created ?? ''),
    read: payload?.read === true,
    url: typeof payload?.url === 'string' ? payload.url : null,
    level: levelOf(payload?.level),
  };
}

export function formatDate(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : dateFormat.format(date);
}

export function relative(date, now) {
  const seconds = (date.getTime() - now) / 1000;
  // Also for a server clock slightly ahead of this one.
  if (seconds > -45) return 'just now';
  for (const [unit, size] of UNITS) {
    if (-seconds >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return relativeFormat.format(Math.round(seconds / 60), 'minute');
}

export function setTime(time, iso, now) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    time.textContent = iso;
    return;
  }
  time.textContent = relative(date, now);
  time.title = dateFormat.format(date);
}

// Server-rendered times are absolute and in the server's zone; show relative ones that stay
// current, with the reader's local time on hover.
export function refreshTimes(root) {
  const now = Date.now();
  for (const time of root.querySelectorAll('time[datetime]')) setTime(time, time.dateTime, now);
}

export function timeElement(iso) {
  const time = document.createElement('time');
  time.dateTime = iso;
  setTime(time, iso, Date.now());
  return time;
}

export function visuallyHidden(text) {
  const span = document.createElement('span');
  span.className = 'notifications-visually-hidden';
  span.textContent = text;
  return span;
}

// The level as a shape with a glyph (drawn by levels.css, hidden from screen readers) and a
// word for screen readers: never colour alone.
export function levelBadge(level) {
  const value = levelOf(level);
  const badge = document.createElement('span');
  badge.className = 'notifications-level';
  badge.dataset.level = value;
  const icon = document.createElement('span');
  icon.className = 'notifications-level-icon';
  icon.setAttribute('aria-hidden', 'true');
  badge.append(icon, visuallyHidden(`${LEVELS[value]}: `));
  return badge;
}

// The text, as a link when the notification has a URL that may be one.
export function textContent(notification, className) {
  const p = document.createElement('p');
  p.className = className;
  const href = safeHref(notification.url);
  if (href) {
    const a = document.createElement('a');
    a.href = href;
    a.textContent = notification.text;
    p.append(a);
  } else {
    p.textContent = notification.text;
  }
  return p;
}

// Insert an element into a list kept newest first, where `idOf` reads a child's id (its
// data-id by default). Ids are not always committed in order, so place by id rather than
// always on top.
export function placeById(list, element, id, idOf = (child) => Number(child.dataset.id)) {
  let before = null;
  for (const other of list.children) {
    const otherId = idOf(other);
    if (otherId && otherId < id) {
      before = other;
      break;
    }
  }
  list.insertBefore(element, before);
}

// One item of the page's list: level, text (or link), time, and for an unread notification
// a visible "Unread" mark and, where marking is possible, a button to mark it read.
export function listItem(notification, { canMarkRead }) {
  const li = document.createElement('li');
  li.dataset.id = String(notification.id);
  li.dataset.level = notification.level;
  const body = document.createElement('div');
  body.className = 'body';
  const text = textContent(notification, 'text');
  text.id = `notification-${notification.id}-text`;
  const meta = document.createElement('div');
  meta.className = 'meta';
  meta.append(timeElement(notification.created));
  body.append(text, meta);
  li.append(levelBadge(notification.level), body);
  setListItemRead(li, notification.read, { canMarkRead });
  return li;
}

// Show a list item as read or unread (the server rendered the same markup).
export function setListItemRead(li, read, { canMarkRead }) {
  li.classList.toggle('is-unread', !read);
  const meta = li.querySelector('.meta');
  if (!meta) return;
  meta.querySelector('.unread-label')?.remove();
  meta.querySelector('.mark-read')?.remove();
  if (read) return;
  const label = document.createElement('span');
  label.className = 'unread-label';
  label.textContent = 'Unread';
  meta.append(label);
  if (!canMarkRead) return;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'mark-read';
  button.textContent = 'Mark read';
  const text = li.querySelector('.text');
  if (text?.id) button.setAttribute('aria-describedby', text.id);
  meta.append(button);
}

// One notification in the bell's menu: a menu item (a link when it has one) holding the
// level, the text, the time and, while unread, a visible "Unread".
export function menuItem(notification) {
  const href = safeHref(notification.url);
  const item = document.createElement(href ? 'a' : 'div');
  if (href) item.href = href;
  item.className = 'notifications-bell-item';
  item.setAttribute('role', 'menuitem');
  item.tabIndex = -1;
  item.dataset.id = String(notification.id);
  const body = document.createElement('span');
  body.className = 'notifications-bell-body';
  const text = document.createElement('span');
  text.className = 'notifications-bell-text';
  text.textContent = notification.text;
  const meta = document.createElement('span');
  meta.className = 'notifications-bell-meta';
  meta.append(visuallyHidden(', '), timeElement(notification.created));
  body.append(text, meta);
  item.append(levelBadge(notification.level), body);
  setMenuItemRead(item, notification.read);
  return item;
}

export function setMenuItemRead(item, read) {
  item.classList.toggle('is-unread', !read);
  const meta = item.querySelector('.notifications-bell-meta');
  meta?.querySelector('.notifications-bell-unread')?.remove();
  if (read || !meta) return;
  const label = document.createElement('span');
  label.className = 'notifications-bell-unread';
  label.append(visuallyHidden(', '), 'Unread');
  meta.append(label);
}
