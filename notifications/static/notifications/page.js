'use strict';

// Live notifications over Server-Sent Events. The page renders the history and the stream URL
// (with the newest rendered id as the cursor); this script adds what arrives after that.
(() => {
  const list = document.getElementById('notifications');
  const indicator = document.getElementById('connection');
  const empty = document.getElementById('empty-state');
  if (!list || !indicator || !list.dataset.streamUrl) return;

  const MIN_DELAY = 1000;
  const MAX_DELAY = 30000;
  const HIGHLIGHT_MS = 3000;

  const streamUrl = new URL(list.dataset.streamUrl, document.baseURI);
  const loginUrl = indicator.dataset.loginUrl || '/accounts/login/?next=/';
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

  const seen = new Set();
  let newestId = Number(streamUrl.searchParams.get('last_event_id')) || 0;
  for (const li of list.querySelectorAll('li[data-id]')) {
    const id = Number(li.dataset.id);
    seen.add(id);
    newestId = Math.max(newestId, id);
  }
  list.dataset.newestId = String(newestId);

  let source = null;
  let probe = null;
  let timer = null;
  let delay = MIN_DELAY;
  let signedOut = false;

  function formatDate(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : dateFormat.format(date);
  }

  // Server-rendered times are in the server's zone; show every time in the reader's. (The
  // list announces additions only, so this rewrite is not read out.)
  for (const time of list.querySelectorAll('time[datetime]')) {
    time.textContent = formatDate(time.dateTime);
  }

  function show(state, text, link) {
    // The indicator is a live region: an unchanged message would be announced again.
    if (!link && indicator.dataset.state === state && indicator.textContent === text) return;
    indicator.dataset.state = state;
    indicator.replaceChildren(text);
    if (link) {
      const a = document.createElement('a');
      a.href = link.href;
      a.textContent = link.text;
      indicator.append(' ', a);
    }
  }

  function render(id, text, created) {
    const li = document.createElement('li');
    li.dataset.id = String(id);
    const p = document.createElement('p');
    p.className = 'text';
    p.textContent = text;
    const time = document.createElement('time');
    time.dateTime = created;
    time.textContent = formatDate(created);
    li.append(p, time);
    return li;
  }

  function add(payload) {
    const id = Number(payload.id);
    if (!Number.isSafeInteger(id) || seen.has(id)) return;
    seen.add(id);
    newestId = Math.max(newestId, id);
    list.dataset.newestId = String(newestId);

    const li = render(id, String(payload.text ?? ''), String(payload.created ?? ''));
    // Ids are not always committed in order, so place by id rather than always on top.
    let before = null;
    for (const other of list.children) {
      if (Number(other.dataset.id) < id) {
        before = other;
        break;
      }
    }
    list.insertBefore(li, before);
    li.classList.add('is-new');
    setTimeout(() => li.classList.remove('is-new'), HIGHLIGHT_MS);
    if (empty) empty.hidden = true;
  }

  function stop() {
    clearTimeout(timer);
    timer = null;
    if (probe) probe.abort();
    probe = null;
    if (source) source.close();
    source = null;
  }

  function connect(state) {
    stop();
    show(state, state === 'connecting' ? 'Connecting…' : 'Reconnecting…');
    // A new EventSource sends no Last-Event-ID header: the cursor must travel in the URL.
    const url = new URL(streamUrl);
    url.searchParams.set('last_event_id', String(newestId));
    const es = new EventSource(url);
    source = es;

    es.addEventListener('open', () => {
      delay = MIN_DELAY;
      show('live', 'Live');
    });

    es.addEventListener('notification', (event) => {
      let payload;
      try {
        payload = JSON.parse(event.data);
      } catch {
        return;
      }
      if (payload && typeof payload === 'object') add(payload);
    });

    es.addEventListener('error', () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CONNECTING) {
        // The browser retries by itself, resending the last id it saw.
        show('reconnecting', 'Reconnecting…');
        return;
      }
      // CLOSED: a non-200 answer (our 403, a proxy's 502) ends an EventSource for good, and
      // it does not say which; ask the server directly.
      es.close();
      source = null;
      show('reconnecting', 'Reconnecting…');
      check();
    });
  }

  async function check() {
    const controller = new AbortController();
    probe = controller;
    // HEAD: the server authenticates and answers without opening a stream.
    let status = 0;
    try {
      const response = await fetch(streamUrl, {
        method: 'HEAD',
        credentials: 'same-origin',
        cache: 'no-store',
        signal: controller.signal,
      });
      status = response.status;
    } catch {
      // Offline, or the server is down: status 0, try again later.
    }
    if (probe !== controller) return;
    probe = null;

    if (status === 401 || status === 403) {
      signedOut = true;
      show('signed-out', 'Signed out.', { href: loginUrl, text: 'Sign in again' });
      return;
    }
    schedule();
  }

  function schedule() {
    // Equal jitter: many pages dropped by one restart do not all come back at once.
    const wait = Math.round(delay / 2 + (Math.random() * delay) / 2);
    delay = Math.min(delay * 2, MAX_DELAY);
    show('reconnecting', `Reconnecting — next try in ${Math.ceil(wait / 1000)} s`);
    timer = setTimeout(() => connect('reconnecting'), wait);
  }

  // Free the connection (browsers allow ~6 per host across tabs) when the page is left, and
  // come back if it is restored from the back/forward cache.
  window.addEventListener('pagehide', stop);
  window.addEventListener('pageshow', (event) => {
    if (event.persisted && !signedOut) connect('reconnecting');
  });
  // Back online while waiting out a backoff: no reason to keep waiting.
  window.addEventListener('online', () => {
    if (timer !== null) connect('reconnecting');
  });

  connect('connecting');
})();
