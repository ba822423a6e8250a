// The notifications page: the rendered history, what arrives after it, the connection state.
//
// The page renders the history and the stream URL (with the newest rendered id as the
// cursor); the tab's feed (leader.js) adds what arrives after that, and read and deleted
// events change the list where they happen, in any tab or device.

import { desktopControls, watchDesktop } from './desktop.js';
import { openFeed } from './leader.js';
import { listItem, normalize, notificationId, placeById, refreshTimes } from './render.js';

const HIGHLIGHT_MS = 3000;
const CLOCK_MS = 30000;

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
  const empty = document.getElementById('empty-state');
  const loginUrl = indicator.dataset.loginUrl || '/accounts/login/?next=/';
  const baseTitle = document.title;
  const canMarkRead = false;

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
    return list.querySelector(`li[data-id="${id}"]`);
  }

  function add(payload) {
    const notification = normalize(payload);
    if (!notification.id || item(notification.id)) return;
    list.dataset.newestId = String(Math.max(Number(list.dataset.newestId) || 0, notification.id));
    const li = listItem(notification, { canMarkRead });
    placeById(list, li, notification.id);
    if (empty) empty.hidden = true;
    if (isVisible()) {
      highlight(li);
    } else {
      // Highlighted when the reader comes back, not while nobody looks.
      li.classList.add('is-unseen');
      unseen += 1;
      updateTitle();
    }
  }

  function ids(data) {
    return new Set((Array.isArray(data.ids) ? data.ids : []).map(notificationId).filter(Boolean));
  }

  function deleted(data) {
    for (const id of ids(data)) item(id)?.remove();
    if (empty && !list.querySelector('li[data-id]')) empty.hidden = false;
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
      case 'deleted':
        deleted(message.data);
        break;
      case 'state':
        show(message.state, message.text);
        break;
      case 'role':
        indicator.dataset.role = message.role;
        break;
      case 'stale':
        // Back from the back/forward cache or from being frozen: render it all again.
        window.location.reload();
        break;
      default:
        break;
    }
  });

  document.addEventListener('visibilitychange', () => {
    if (!isVisible()) return;
    unseen = 0;
    updateTitle();
    refreshTimes(list);
    for (const li of list.querySelectorAll('li.is-unseen')) highlight(li);
  });

  const desktopButton = document.getElementById('desktop-toggle');
  const desktopNote = document.getElementById('desktop-note');
  if (desktopButton && desktopNote) desktopControls(desktopButton, desktopNote);
  watchDesktop(feed, baseTitle);

  refreshTimes(list);
  setInterval(() => {
    if (isVisible()) refreshTimes(list);
  }, CLOCK_MS);
  indicator.dataset.role = feed.role;
  feed.seed(rendered);
  feed.start();
}

main();
