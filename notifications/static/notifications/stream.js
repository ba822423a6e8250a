// One Server-Sent Events connection with its own reconnects: backoff with jitter, a HEAD
// probe that tells "signed out" and "too many streams" from an outage, Retry-After honoured.

export const MIN_DELAY = 1000;
export const MAX_DELAY = 30000;
export const PROBE_TIMEOUT = 10000;

// The named events of the stream (CONTRACT.md), each with one line of JSON as its data.
export const EVENTS = Object.freeze(['notification', 'read', 'deleted']);

// Seconds from a Retry-After header (delta-seconds or an HTTP date), or 0.
export function retryAfterSeconds(value) {
  if (!value) return 0;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Math.min(Number(trimmed), 3600);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? 0 : Math.min(Math.max(0, Math.ceil((date - Date.now()) / 1000)), 3600);
}

// States: 'connecting', 'live', 'reconnecting', 'signed-out' (the client stops itself).
export class StreamClient {
  // `url`: the stream's URL; `cursor()`: the id to resume after; `onState(state, text)`;
  // `onEvent(type, data)` for each named event whose data is a JSON object.
  constructor(url, { cursor, onState, onEvent }) {
    this.url = new URL(url, document.baseURI);
    this.cursor = cursor;
    this.onState = onState;
    this.onEvent = onEvent;
    this.source = null;
    this.probe = null;
    this.timer = null;
    this.delay = MIN_DELAY;
  }

  // Whether the client is waiting out a backoff before its next attempt.
  get waiting() {
    return this.timer !== null;
  }

  start(initial) {
    this.delay = MIN_DELAY;
    this.connect(initial);
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.probe) this.probe.abort();
    this.probe = null;
    if (this.source) this.source.close();
    this.source = null;
  }

  connect(initial) {
    this.stop();
    this.onState(initial ? 'connecting' : 'reconnecting', initial ? 'Connecting…' : 'Reconnecting…');
    // A new EventSource sends no Last-Event-ID header: the cursor travels in the URL, so a
    // new connection resumes from the newest id seen, not from the last one it received.
    const url = new URL(this.url);
    url.searchParams.set('last_event_id', String(this.cursor()));
    const es = new EventSource(url);
    this.source = es;

    es.addEventListener('open', () => {
      if (this.source !== es) return;
      this.delay = MIN_DELAY;
      this.onState('live', 'Live');
    });

    for (const type of EVENTS) {
      es.addEventListener(type, (event) => {
        if (this.source !== es) return;
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          return;
        }
        if (data && typeof data === 'object' && !Array.isArray(data)) this.onEvent(type, data);
      });
    }

    es.addEventListener('error', () => {
      if (this.source !== es) return;
      // Reconnect here rather than let the browser do it: a non-200 answer (403, 429, a
      // proxy's 502) would end the EventSource for good without saying which, its own retries
      // do not back off and say nothing of the next one. Ask the server first.
      es.close();
      this.source = null;
      this.onState('reconnecting', 'Reconnecting…');
      this.check();
    });
  }

  async check() {
    const controller = new AbortController();
    this.probe = controller;
    // HEAD: the server authenticates and answers without opening a stream.
    let status = 0;
    let retryAfter = 0;
    const deadline = setTimeout(() => controller.abort(), PROBE_TIMEOUT);
    try {
      const response = await fetch(this.url, {
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
    if (this.probe !== controller) return;
    this.probe = null;

    if (status === 401 || status === 403) {
      this.onState('signed-out', 'Signed out.');
      return;
    }
    if (status === 429) {
      this.schedule(retryAfter, (s) => `Too many open connections — retrying in ${s} s`);
      return;
    }
    if (status === 503 && retryAfter) {
      this.schedule(retryAfter, (s) => `Server busy — retrying in ${s} s`);
      return;
    }
    this.schedule(0, (s) => `Reconnecting — next try in ${s} s`);
  }

  schedule(minimumSeconds, message) {
    // Equal jitter: many pages dropped by one restart do not all come back at once.
    const backoff = Math.round(this.delay / 2 + (Math.random() * this.delay) / 2);
    this.delay = Math.min(this.delay * 2, MAX_DELAY);
    const wait = Math.max(backoff, minimumSeconds * 1000);
    this.onState('reconnecting', message(Math.ceil(wait / 1000)));
    this.timer = setTimeout(() => this.connect(false), wait);
  }
}
