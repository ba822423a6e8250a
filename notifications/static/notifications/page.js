'use strict';

// Live notifications over Server-Sent Events, one stream per browser.
//
// The page renders the history and the stream URL (with the newest rendered id as the cursor);
// this script adds what arrives after that. The tabs of one browser elect a leader with the
// Web Locks API: the leader alone holds an EventSource and passes every notification to the
// other tabs over a BroadcastChannel (each notification is claimed once by the server, so a
// tab that does not hear it from the leader never sees it). When the leader goes, the next tab
// in the lock's queue takes over from the newest id it has seen. Without those APIs every tab
// holds its own EventSource.
(() => {
  const list = document.getElementById('notifications');
  const indicator = document.getElementById('connection');
  const empty = document.getElementById('empty-state');
  if (!list || !indicator || !list.dataset.streamUrl) return;
  const desktopButton = document.getElementById('desktop-toggle');
  const desktopNote = document.getElementById('desktop-note');

  const MIN_DELAY = 1000;
  const MAX_DELAY = 30000;
  const HIGHLIGHT_MS = 3000;
  const CLOCK_MS = 30000;
  const PROBE_TIMEOUT = 10000;
  const DESKTOP_KEY = 'notifications.desktop';

  const streamUrl = new URL(list.dataset.streamUrl, document.baseURI);
  const loginUrl = indicator.dataset.loginUrl || '/accounts/login/?next=/';
  // Per user: a tab still showing one account must not take over another account's stream.
  const scope = `notifications:${list.dataset.user || ''}`;
  const LEADER_LOCK = `${scope}:stream`;
  const VISIBLE_LOCK = `${scope}:visible`;
  const locks = navigator.locks && typeof navigator.locks.request === 'function' ? navigator.locks : null;
  const channel = locks && typeof BroadcastChannel === 'function' ? new BroadcastChannel(scope) : null;
  const shared = Boolean(locks && channel);

  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
  const baseTitle = document.title;

  const seen = new Set();
  let newestId = Number(streamUrl.searchParams.get('last_event_id')) || 0;
  const rendered = [];
  for (const li of list.querySelectorAll('li[data-id]')) {
    const id = Number(li.dataset.id);
    seen.add(id);
    newestId = Math.max(newestId, id);
    const time = li.querySelector('time');
    rendered.push({ id, text: li.querySelector('.text')?.textContent ?? '', created: time?.dateTime ?? '' });
  }
  list.dataset.newestId = String(newestId);

  // Connection state of this tab (the leader's, echoed by the others).
  let state = 'connecting';
  let stateText = 'Connecting…';
  let signedOut = false;
  let unread = 0;

  // --- Rendering -------------------------------------------------------------------------

  function formatDate(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? iso : dateFormat.format(date);
  }

  const UNITS = [
    ['year', 365 * 24 * 3600],
    ['month', 30 * 24 * 3600],
    ['week', 7 * 24 * 3600],
    ['day', 24 * 3600],
    ['hour', 3600],
    ['minute', 60],
  ];

  function relative(date, now) {
    const seconds = (date.getTime() - now) / 1000;
    // Also for a server clock slightly ahead of this one.
    if (seconds > -45) return 'just now';
    for (const [unit, size] of UNITS) {
      if (-seconds >= size) return relativeFormat.format(Math.round(seconds / size), unit);
    }
    return relativeFormat.format(Math.round(seconds / 60), 'minute');
  }

  function setTime(time, iso, now) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) {
      time.textContent = iso;
      return;
    }
    time.textContent = relative(date, now);
    time.title = dateFormat.format(date);
  }

  // Server-rendered times are absolute and in the server's zone; show relative ones that
  // stay current, with the reader's local time on hover. (The list announces additions only,
  // so these rewrites are not read out.)
  function refreshTimes() {
    const now = Date.now();
    for (const time of list.querySelectorAll('time[datetime]')) setTime(time, time.dateTime, now);
  }

  function render(id, text, created) {
    const li = document.createElement('li');
    li.dataset.id = String(id);
    const p = document.createElement('p');
    p.className = 'text';
    p.textContent = text;
    const time = document.createElement('time');
    time.dateTime = created;
    setTime(time, created, Date.now());
    li.append(p, time);
    return li;
  }

  function highlight(li) {
    li.classList.remove('is-unread');
    li.classList.add('is-new');
    setTimeout(() => li.classList.remove('is-new'), HIGHLIGHT_MS);
  }

  function isVisible() {
    return document.visibilityState === 'visible';
  }

  function updateTitle() {
    document.title = unread > 0 ? `(${unread}) ${baseTitle}` : baseTitle;
  }

  // Add one notification unless this tab has it already; return whether it was added.
  function add(payload) {
    const id = Number(payload && payload.id);
    if (!Number.isSafeInteger(id) || id <= 0 || seen.has(id)) return false;
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
    if (empty) empty.hidden = true;
    if (isVisible()) {
      highlight(li);
    } else {
      // Highlighted when the reader comes back, not while nobody looks.
      li.classList.add('is-unread');
      unread += 1;
      updateTitle();
    }
    return true;
  }

  // --- Connection indicator ----------------------------------------------------------------

  function show(newState, text) {
    state = newState;
    stateText = text;
    if (newState === 'signed-out') {
      indicator.dataset.state = newState;
      const a = document.createElement('a');
      a.href = loginUrl;
      a.textContent = 'Sign in again';
      indicator.replaceChildren(text, ' ', a);
      return;
    }
    // The indicator is a live region: an unchanged message would be announced again.
    if (indicator.dataset.state === newState && indicator.textContent === text) return;
    indicator.dataset.state = newState;
    indicator.replaceChildren(text);
  }

  // --- Desktop notifications ---------------------------------------------------------------

  const desktopSupported = typeof Notification === 'function';

  function desktopWanted() {
    try {
      return localStorage.getItem(DESKTOP_KEY) === 'on';
    } catch {
      return false;
    }
  }

  function setDesktopWanted(on) {
    try {
      localStorage.setItem(DESKTOP_KEY, on ? 'on' : 'off');
    } catch {
      // Storage disabled: the choice lasts as long as this page.
    }
    desktopChoice = on;
  }

  let desktopChoice = desktopWanted();

  function desktopOn() {
    return desktopSupported && Notification.permission === 'granted' && desktopChoice;
  }

  function updateDesktopControls() {
    if (!desktopButton || !desktopNote) return;
    if (!desktopSupported) {
      desktopButton.hidden = true;
      desktopNote.hidden = true;
      return;
    }
    const permission = Notification.permission;
    desktopNote.hidden = false;
    if (permission === 'denied') {
      desktopButton.hidden = true;
      desktopNote.textContent = 'Desktop notifications are blocked in this browser’s site settings.';
      return;
    }
    desktopButton.hidden = false;
    const on = desktopOn();
    desktopButton.textContent = on ? 'Turn off desktop notifications' : 'Turn on desktop notifications';
    desktopButton.setAttribute('aria-pressed', String(on));
    desktopNote.textContent = on
      ? 'Shown while no tab of this site is visible.'
      : 'Get a desktop notification while no tab of this site is visible.';
  }

  async function toggleDesktop() {
    if (desktopOn()) {
      setDesktopWanted(false);
    } else {
      // Asked only here, after a click: browsers ignore or penalise unprompted requests.
      let permission = Notification.permission;
      if (permission === 'default') {
        try {
          permission = await Notification.requestPermission();
        } catch {
          permission = Notification.permission;
        }
      }
      setDesktopWanted(permission === 'granted');
    }
    updateDesktopControls();
    if (channel) channel.postMessage({ type: 'desktop' });
  }

  // Is any tab of this site, for this user, visible? Each visible tab holds a shared lock.
  async function anyTabVisible() {
    if (isVisible()) return true;
    if (!shared) return false;
    try {
      const snapshot = await locks.query();
      return (snapshot.held || []).some((lock) => lock.name === VISIBLE_LOCK);
    } catch {
      return false;
    }
  }

  async function notifyDesktop(payload) {
    if (!desktopOn() || (await anyTabVisible())) return;
    try {
      // The tag also merges duplicates where every tab has its own stream (no Web Locks).
      const note = new Notification(baseTitle, {
        body: String(payload.text ?? ''),
        tag: `notification-${payload.id}`,
        lang: document.documentElement.lang || undefined,
      });
      note.addEventListener('click', () => {
        window.focus();
        note.close();
      });
    } catch {
      // Some browsers allow them only from a service worker: nothing to show then.
    }
  }

  let visibleHeld = false;
  let releaseVisible = null;

  function trackVisibility() {
    if (!shared) return;
    if (isVisible() && !visibleHeld) {
      visibleHeld = true;
      let granted = false;
      locks
        .request(VISIBLE_LOCK, { mode: 'shared' }, () => {
          granted = true;
          if (!isVisible()) return undefined;
          return new Promise((resolve) => {
            releaseVisible = resolve;
          });
        })
        .catch(() => {})
        .finally(() => {
          visibleHeld = false;
          releaseVisible = null;
          // Shown again while the lock was being let go; a refused request is not retried.
          if (granted && isVisible()) trackVisibility();
        });
    } else if (!isVisible() && releaseVisible) {
      releaseVisible();
    }
  }

  // --- The stream (leader only) ------------------------------------------------------------

  let isLeader = false;
  let releaseLeadership = null;
  let waitForLeadership = null;
  let source = null;
  let probe = null;
  let timer = null;
  let delay = MIN_DELAY;

  function publish(message) {
    if (channel) channel.postMessage(message);
  }

  function announce(newState, text) {
    show(newState, text);
    if (isLeader) publish({ type: 'state', state: newState, text });
  }

  function received(payload) {
    if (!add(payload)) return;
    publish({ type: 'notification', payload });
    notifyDesktop(payload);
  }

  function stop() {
    clearTimeout(timer);
    timer = null;
    if (probe) probe.abort();
    probe = null;
    if (source) source.close();
    source = null;
  }

  function connect(initial) {
    stop();
    if (!isLeader) return;
    announce(initial ? 'connecting' : 'reconnecting', initial ? 'Connecting…' : 'Reconnecting…');
    // A new EventSource sends no Last-Event-ID header: the cursor travels in the URL. It is
    // the newest id any tab has seen, so a new leader resumes where the old one stopped.
    const url = new URL(streamUrl);
    url.searchParams.set('last_event_id', String(newestId));
    const es = new EventSource(url);
    source = es;

    es.addEventListener('open', () => {
      if (source !== es) return;
      delay = MIN_DELAY;
      announce('live', 'Live');
    });

    es.addEventListener('notification', (event) => {
      let payload;
      try {
        payload = JSON.parse(event.data);
      } catch {
        return;
      }
      if (payload && typeof payload === 'object') received(payload);
    });

    es.addEventListener('error', () => {
      if (source !== es) return;
      // Reconnect here rather than let the browser do it: a non-200 answer (403, 429, a
      // proxy's 502) would end the EventSource for good without saying which, its own retries
      // do not back off and say nothing of the next one, and the newest id any tab has seen
      // is a better cursor than the last one this EventSource received. Ask the server first.
      es.close();
      source = null;
      announce('reconnecting', 'Reconnecting…');
      check();
    });
  }

  // Seconds from a Retry-After header (delta-seconds or an HTTP date), or 0.
  function retryAfterSeconds(value) {
    if (!value) return 0;
    const trimmed = value.trim();
    if (/^\d+$/.test(trimmed)) return Math.min(Number(trimmed), 3600);
    const date = Date.parse(trimmed);
    return Number.isNaN(date) ? 0 : Math.min(Math.max(0, Math.ceil((date - Date.now()) / 1000)), 3600);
  }

  async function check() {
    const controller = new AbortController();
    probe = controller;
    // HEAD: the server authenticates and answers without opening a stream.
    let status = 0;
    let retryAfter = 0;
    const deadline = setTimeout(() => controller.abort(), PROBE_TIMEOUT);
    try {
      const response = await fetch(streamUrl, {
        method: 'HEAD',
        credentials: 'same-origin',
        cache: 'no-store',
        signal: controller.signal,
      });
      status = response.status;
      retryAfter = retryAfterSeconds(response.headers.get('Retry-After'));
    } catch {
      // Offline, the server is down or does not answer: status 0, try again later.
    }
    clearTimeout(deadline);
    if (probe !== controller) return;
    probe = null;

    if (status === 401 || status === 403) {
      announce('signed-out', 'Signed out.');
      signOut();
      return;
    }
    if (status === 429) {
      schedule(retryAfter, (s) => `Too many open connections — retrying in ${s} s`);
      return;
    }
    if (status === 503 && retryAfter) {
      schedule(retryAfter, (s) => `Server busy — retrying in ${s} s`);
      return;
    }
    schedule(0, (s) => `Reconnecting — next try in ${s} s`);
  }

  function schedule(minimumSeconds, message) {
    // Equal jitter: many pages dropped by one restart do not all come back at once.
    const backoff = Math.round(delay / 2 + (Math.random() * delay) / 2);
    delay = Math.min(delay * 2, MAX_DELAY);
    const wait = Math.max(backoff, minimumSeconds * 1000);
    announce('reconnecting', message(Math.ceil(wait / 1000)));
    timer = setTimeout(() => connect(false), wait);
  }

  function lead() {
    isLeader = true;
    indicator.dataset.role = 'leader';
    delay = MIN_DELAY;
    connect(state === 'connecting');
  }

  // Hold the leader lock until this tab leaves or is signed out; queue for it meanwhile.
  function seekLeadership() {
    if (isLeader || waitForLeadership) return;
    if (!shared) {
      lead();
      return;
    }
    const controller = new AbortController();
    waitForLeadership = controller;
    locks
      .request(LEADER_LOCK, { signal: controller.signal }, () => {
        waitForLeadership = null;
        if (signedOut) return undefined;
        return new Promise((resolve) => {
          releaseLeadership = resolve;
          lead();
        });
      })
      .catch(() => {})
      .finally(() => {
        if (waitForLeadership === controller) waitForLeadership = null;
      });
  }

  function abdicate() {
    isLeader = false;
    indicator.dataset.role = shared ? 'follower' : '';
    stop();
    if (waitForLeadership) waitForLeadership.abort();
    waitForLeadership = null;
    if (releaseLeadership) releaseLeadership();
    releaseLeadership = null;
  }

  // Signed out is true of every tab (one cookie jar): all of them stop, none keeps the lock,
  // and a tab opened after signing in again leads the rest back.
  function signOut() {
    signedOut = true;
    abdicate();
  }

  function rejoin() {
    signedOut = false;
    seekLeadership();
  }

  // --- Messages between tabs ---------------------------------------------------------------

  if (channel) {
    channel.addEventListener('message', (event) => {
      const message = event.data;
      if (!message || typeof message !== 'object') return;
      switch (message.type) {
        case 'notification':
          add(message.payload);
          break;
        case 'state':
          if (isLeader) break;
          if (message.state === 'signed-out') {
            show('signed-out', 'Signed out.');
            signOut();
          } else {
            if (signedOut && message.state === 'live') rejoin();
            show(String(message.state), String(message.text));
          }
          break;
        case 'hello':
          // A new tab: tell it the connection state, and take its rendered history, which may
          // hold rows its render claimed that this tab never got.
          if (isLeader) publish({ type: 'state', state, text: stateText });
          for (const payload of message.history || []) {
            if (Number(payload.id) > newestId) add(payload);
          }
          break;
        case 'desktop':
          desktopChoice = desktopWanted();
          updateDesktopControls();
          break;
        default:
          break;
      }
    });
  }

  // --- Page lifecycle ----------------------------------------------------------------------

  document.addEventListener('visibilitychange', () => {
    trackVisibility();
    if (!isVisible()) return;
    unread = 0;
    updateTitle();
    refreshTimes();
    for (const li of list.querySelectorAll('li.is-unread')) highlight(li);
  });

  // Leaving the page, or being frozen in the background, hands the stream over at once (and
  // frees the connection; browsers allow ~6 per host across tabs). A page that comes back
  // from the back/forward cache or from being frozen missed what the other tabs were sent
  // meanwhile: a reload renders it all again.
  function leave() {
    abdicate();
    if (releaseVisible) releaseVisible();
  }
  window.addEventListener('pagehide', leave);
  document.addEventListener('freeze', leave);
  document.addEventListener('resume', () => window.location.reload());
  window.addEventListener('pageshow', (event) => {
    if (event.persisted) window.location.reload();
  });
  // Back online while waiting out a backoff: no reason to keep waiting.
  window.addEventListener('online', () => {
    if (isLeader && timer !== null) connect(false);
  });

  if (desktopButton) desktopButton.addEventListener('click', toggleDesktop);
  window.addEventListener('storage', (event) => {
    if (event.key !== DESKTOP_KEY) return;
    desktopChoice = desktopWanted();
    updateDesktopControls();
  });

  refreshTimes();
  setInterval(() => {
    if (isVisible()) refreshTimes();
  }, CLOCK_MS);
  updateDesktopControls();
  trackVisibility();
  indicator.dataset.role = shared ? 'follower' : '';
  publish({ type: 'hello', history: rendered });
  seekLeadership();
})();
