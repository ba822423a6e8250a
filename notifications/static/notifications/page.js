// The notifications page: the rendered history, what arrives after it, read state, older
// history, the connection state.
//
// The page renders the history and the stream URL (with the newest rendered id as the
// cursor); the tab's feed (leader.js) adds what arrives after that, and read and deleted
// events change the list where they happen, in any tab or device. Configuration comes from
// the list's data- attributes: stream-url, user, api-notifications, api-read, csrf-token.

import { ApiError, listNotifications, markRead } from './api.js';
import { desktopControls, watchDesktop } from './desktop.js';
import { openFeed } from './leader.js';
import {
  eventIds,
  listItem,
  normalize,
  placeById,
  refreshTimes,
  safeHref,
  setListItemRead,
  toId,
} from './render.js';

const HIGHLIGHT_MS = 3000;
const CLOCK_MS = 30000;
const OLDER_PAGE = 20;
// Notifications read again after a reconnect (the API's largest page).
const RESYNC_PAGE = 100;
// How long a followed link waits for its notification to be marked read.
const FOLLOW_TIMEOUT = 3000;

function isVisible() {
  return document.visibilityState === 'visible';
}

// What the server rendered, as the payloads the stream would have sent.
function renderedPayloads(list) {
  const payloads = [];
  for (const li of list.querySelectorAll('li[data-id]')) {
    const link = li.querySelector('.text a');
    payloads.push({
      id: Number(li.dataset.id),
      text: li.querySelector('.text')?.textContent ?? '',
      created: li.querySelector('time')?.dateTime ?? '',
      read: !li.classList.contains('is-unread'),
      url: link ? link.getAttribute('href') : null,
      level: li.dataset.level || 'info',
    });
  }
  return payloads;
}

function main() {
  const list = document.getElementById('notifications');
  const indicator = document.getElementById('connection');
  if (!list || !indicator || !list.dataset.streamUrl) return;
  const older = document.getElementById('older-notifications');
  const olderHeading = document.getElementById('older-heading');
  const olderBox = document.getElementById('older');
  const olderButton = document.getElementById('load-older');
  const olderStatus = document.getElementById('older-status');
  const empty = document.getElementById('empty-state');
  const readControls = document.getElementById('read-controls');
  const unreadCount = document.getElementById('unread-count');
  const markAllButton = document.getElementById('mark-all-read');
  const readError = document.getElementById('read-error');
  const loginUrl = indicator.dataset.loginUrl || '/accounts/login/?next=/';
  const baseTitle = document.title;
  const apiList = list.dataset.apiNotifications || '';
  const apiRead = list.dataset.apiRead || '';
  const csrfToken = list.dataset.csrfToken || '';
  const canMarkRead = Boolean(apiRead && csrfToken);
  const lists = older ? [list, older] : [list];

  const feed = openFeed({ streamUrl: list.dataset.streamUrl, user: list.dataset.user });
  const rendered = renderedPayloads(list);
  list.dataset.newestId = String(Math.max(feed.newestId, ...rendered.map((p) => p.id)));

  // Arrived while the tab was hidden: counted in the title until the reader comes back.
  let unseen = 0;

  function updateTitle() {
    document.title = unseen > 0 ? `(${unseen}) ${baseTitle}` : baseTitle;
  }

  function highlight(li) {
    li.classList.remove('is-unseen');
    li.classList.add('is-new');
    setTimeout(() => li.classList.remove('is-new'), HIGHLIGHT_MS);
  }

  function item(id) {
    for (const each of lists) {
      const li = each.querySelector(`li[data-id="${id}"]`);
      if (li) return li;
    }
    return null;
  }

  function items() {
    return lists.flatMap((each) => [...each.querySelectorAll('li[data-id]')]);
  }

  function updateEmpty() {
    if (empty) empty.hidden = items().length > 0;
  }

  function add(payload) {
    const notification = normalize(payload);
    if (!notification.id || item(notification.id)) return;
    list.dataset.newestId = String(Math.max(Number(list.dataset.newestId) || 0, notification.id));
    const li = listItem(notification, { canMarkRead });
    placeById(list, li, notification.id);
    updateEmpty();
    if (isVisible()) {
      highlight(li);
    } else {
      // Highlighted when the reader comes back, not while nobody looks.
      li.classList.add('is-unseen');
      unseen += 1;
      updateTitle();
    }
  }

  function markShownRead(data) {
    if (data.all === true) {
      const newest = toId(data.newest) || Infinity;
      for (const li of items()) {
        if (Number(li.dataset.id) <= newest) setListItemRead(li, true, { canMarkRead });
      }
      return;
    }
    for (const id of eventIds(data)) {
      const li = item(id);
      if (li) setListItemRead(li, true, { canMarkRead });
    }
  }

  function deleted(data) {
    for (const id of eventIds(data)) item(id)?.remove();
    updateEmpty();
    if (older && !older.querySelector('li')) {
      older.hidden = true;
      if (olderHeading) olderHeading.hidden = true;
    }
  }

  // Live again after a drop: what was marked read or deleted meanwhile, from the API.
  async function resync() {
    if (!apiList) return;
    let found;
    try {
      found = await listNotifications(apiList, { limit: RESYNC_PAGE });
    } catch {
      return;
    }
    const byId = new Map(found.notifications.map((n) => [toId(n.id), n]));
    const lowest = byId.size ? Math.min(...byId.keys()) : Infinity;
    for (const li of items()) {
      const id = Number(li.dataset.id);
      const notification = byId.get(id);
      if (notification) {
        if (notification.read === true) setListItemRead(li, true, { canMarkRead });
      } else if (id >= lowest || found.next === null) {
        li.remove();
      }
    }
    updateEmpty();
    if (found.unread !== null) feed.setUnread(found.unread);
  }

  function showUnread(count) {
    if (!readControls || !unreadCount || count === null) return;
    unreadCount.textContent = String(count);
    if (markAllButton) markAllButton.setAttribute('aria-disabled', String(count === 0));
  }

  // The connection indicator: a live region, so an unchanged message is not set again.
  function show(state, text) {
    if (state === 'signed-out') {
      indicator.dataset.state = state;
      const a = document.createElement('a');
      a.href = loginUrl;
      a.textContent = 'Sign in again';
      indicator.replaceChildren(text, ' ', a);
      return;
    }
    if (indicator.dataset.state === state && indicator.textContent === text) return;
    indicator.dataset.state = state;
    indicator.replaceChildren(text);
  }

  feed.subscribe((message) => {
    switch (message.type) {
      case 'notification':
        add(message.payload);
        break;
      case 'read':
        markShownRead(message.data);
        break;
      case 'deleted':
        deleted(message.data);
        break;
      case 'unread':
        showUnread(message.count);
        break;
      case 'state':
        show(message.state, message.text);
        break;
      case 'role':
        indicator.dataset.role = message.role;
        break;
      case 'resync':
        resync();
        break;
      case 'stale':
        // Back from the back/forward cache or from being frozen: render it all again.
        window.location.reload();
        break;
      default:
        break;
    }
  });

  // --- Marking read ----------------------------------------------------------------------

  function failed(error) {
    if (!readError) return;
    const reason = error instanceof ApiError ? error.message : 'Something went wrong.';
    readError.textContent = `Could not mark as read: ${reason}`;
    readError.hidden = false;
  }

  async function read(change, options) {
    if (readError) readError.hidden = true;
    const unread = await markRead(apiRead, csrfToken, change, options);
    feed.applyLocally('read', { ...change, unread });
    return unread;
  }

  async function markOne(li) {
    const id = Number(li.dataset.id);
    try {
      await read({ ids: [id] });
    } catch (error) {
      failed(error);
      return;
    }
    // The button is gone: keep the keyboard where it was.
    li.tabIndex = -1;
    li.focus();
  }

  async function markAll() {
    if (markAllButton.getAttribute('aria-disabled') === 'true') return;
    // Up to what this tab has shown: a notification on its way is not read unseen.
    const newest = Math.max(feed.newestId, Number(list.dataset.newestId) || 0);
    try {
      await read(newest ? { all: true, newest } : { all: true });
    } catch (error) {
      failed(error);
    }
  }

  // Opening an unread notification's link marks it read first (then follows it, in the same
  // tab); a link opened elsewhere (a modifier key, the middle button) is marked on the way.
  async function follow(event, link, li) {
    if (!li.classList.contains('is-unread')) return;
    const id = Number(li.dataset.id);
    const elsewhere = event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey;
    if (elsewhere) {
      read({ ids: [id] }, { keepalive: true }).catch(failed);
      return;
    }
    event.preventDefault();
    const href = safeHref(link.getAttribute('href'));
    await Promise.race([
      read({ ids: [id] }, { keepalive: true }).catch(() => {}),
      new Promise((resolve) => {
        setTimeout(resolve, FOLLOW_TIMEOUT);
      }),
    ]);
    if (href) window.location.assign(href);
  }

  function clicked(event) {
    const target = event.target instanceof Element ? event.target : null;
    const li = target?.closest('li[data-id]');
    if (!li || !canMarkRead) return;
    const button = target.closest('button.mark-read');
    if (button) {
      markOne(li);
      return;
    }
    const link = target.closest('.text a');
    if (link) follow(event, link, li);
  }

  for (const each of lists) {
    each.addEventListener('click', clicked);
    // The middle button fires auxclick, not click.
    each.addEventListener('auxclick', clicked);
  }
  if (canMarkRead && readControls) {
    readControls.hidden = false;
    if (markAllButton) markAllButton.addEventListener('click', markAll);
  }

  // --- Older history ---------------------------------------------------------------------

  let nextPage = null;

  function oldestShown() {
    const shown = items().map((li) => Number(li.dataset.id));
    return shown.length ? Math.min(...shown) : 0;
  }

  // Whether anything older than the rendered page exists, and the unread count meanwhile.
  async function probeOlder() {
    const before = oldestShown();
    if (!before) return;
    try {
      const found = await listNotifications(apiList, { before, limit: 1 });
      if (found.unread !== null) feed.setUnread(found.unread);
      if (found.notifications.length && olderBox) olderBox.hidden = false;
    } catch {
      // No button then: the rendered page is all this visit shows.
    }
  }

  async function loadOlder() {
    if (olderButton.getAttribute('aria-busy') === 'true') return;
    olderButton.setAttribute('aria-busy', 'true');
    olderStatus.textContent = 'Loading…';
    let found;
    try {
      found = nextPage
        ? await listNotifications(nextPage)
        : await listNotifications(apiList, { before: oldestShown(), limit: OLDER_PAGE });
    } catch (error) {
      olderStatus.textContent = `Could not load older notifications: ${error instanceof ApiError ? error.message : 'something went wrong.'}`;
      olderButton.removeAttribute('aria-busy');
      return;
    }
    olderButton.removeAttribute('aria-busy');
    if (found.unread !== null) feed.setUnread(found.unread);
    let first = null;
    for (const payload of found.notifications) {
      const notification = normalize(payload);
      if (!notification.id || item(notification.id)) continue;
      const li = listItem(notification, { canMarkRead });
      older.append(li);
      first ??= li;
    }
    older.hidden = !older.querySelector('li');
    if (olderHeading) olderHeading.hidden = older.hidden;
    nextPage = found.next;
    const count = found.notifications.length;
    olderStatus.textContent = nextPage
      ? `Loaded ${count} older notification${count === 1 ? '' : 's'}.`
      : `Loaded ${count} older notification${count === 1 ? '' : 's'}; there are no more.`;
    if (!nextPage) {
      olderBox.hidden = true;
      // The button is gone: the keyboard goes on with the first item it loaded.
      if (first) {
        first.tabIndex = -1;
        first.focus();
      }
    }
  }

  if (apiList && older && olderBox && olderButton && olderStatus) {
    olderButton.addEventListener('click', loadOlder);
    probeOlder();
  }

  // --- The rest ----------------------------------------------------------------------------

  document.addEventListener('visibilitychange', () => {
    if (!isVisible()) return;
    unseen = 0;
    updateTitle();
    for (const each of lists) refreshTimes(each);
    for (const li of list.querySelectorAll('li.is-unseen')) highlight(li);
  });

  const desktopButton = document.getElementById('desktop-toggle');
  const desktopNote = document.getElementById('desktop-note');
  if (desktopButton && desktopNote) desktopControls(desktopButton, desktopNote);
  watchDesktop(feed, baseTitle);

  refreshTimes(list);
  setInterval(() => {
    if (isVisible()) for (const each of lists) refreshTimes(each);
  }, CLOCK_MS);
  indicator.dataset.role = feed.role;
  // The count the server rendered; none rendered and no history means none unread.
  let unread = Number.parseInt(list.dataset.unread ?? '', 10);
  if (!Number.isSafeInteger(unread) && !rendered.length) unread = 0;
  feed.seed(rendered, Number.isSafeInteger(unread) ? unread : undefined);
  showUnread(feed.unread);
  feed.start();
}

main();
