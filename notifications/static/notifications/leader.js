// One stream per browser and user, shared by every tab and every consumer in a tab.
//
// The tabs of one browser elect a leader with the Web Locks API: the leader alone holds an
// EventSource and passes every event to the other tabs over a BroadcastChannel (each
// notification is claimed once by the server, so a tab that does not hear it from the leader
// never sees it). When the leader goes, the next tab in the lock's queue takes over from the
// newest id it has seen. Without those APIs every tab holds its own EventSource.
//
// Within a tab the page and the bell are consumers of one feed (openFeed returns the same
// object for the same user): they get each notification once, and each read or deleted event.

import { notificationId } from './render.js';
import { StreamClient } from './stream.js';

const feeds = new Map();

// The feed of this tab for `user`; `streamUrl` (with the newest rendered id as its
// last_event_id) is used by the first consumer to ask.
export function openFeed({ streamUrl, user }) {
  const scope = `notifications:${user || ''}`;
  let feed = feeds.get(scope);
  if (!feed) {
    feed = new Feed(scope, streamUrl);
    feeds.set(scope, feed);
  }
  return feed;
}

function isVisible() {
  return document.visibilityState === 'visible';
}

function report(error) {
  if (typeof reportError === 'function') reportError(error);
}

// Messages to consumers (subscribe): {type: 'notification', payload, fromStream},
// {type: 'read' | 'deleted', data}, {type: 'unread', count}, {type: 'state', state, text},
// {type: 'role', role}, {type: 'stale'} (this tab missed events while frozen or cached),
// {type: 'resync'} (the stream is live again after a drop: read and deleted may have changed).
class Feed {
  constructor(scope, streamUrl) {
    // Per user: a tab still showing one account must not take over another account's stream.
    this.leaderLock = `${scope}:stream`;
    this.visibleLock = `${scope}:visible`;
    const locks = navigator.locks;
    this.locks = locks && typeof locks.request === 'function' ? locks : null;
    this.channel = this.locks && typeof BroadcastChannel === 'function' ? new BroadcastChannel(scope) : null;
    this.shared = Boolean(this.locks && this.channel);

    const url = new URL(streamUrl, document.baseURI);
    this.newestId = Number(url.searchParams.get('last_event_id')) || 0;
    this.seen = new Set();
    this.history = [];
    this.listeners = new Set();
    this.unread = null;

    // Connection state of this tab (the leader's, echoed by the others).
    this.state = 'connecting';
    // Whether this tab's own stream has been live (so a later 'live' is a return).
    this.streamWasLive = false;
    this.stateText = 'Connecting…';
    this.signedOut = false;
    this.isLeader = false;
    this.started = false;
    this.releaseLeadership = null;
    this.waitForLeadership = null;
    this.visibleHeld = false;
    this.releaseVisible = null;

    this.client = new StreamClient(url, {
      cursor: () => this.newestId,
      onState: (state, text) => this.announce(state, text),
      onEvent: (type, data) => this.received(type, data),
    });

    if (this.channel) this.channel.addEventListener('message', (event) => this.relayed(event.data));
    document.addEventListener('visibilitychange', () => this.trackVisibility());
    // Leaving the page, or being frozen in the background, hands the stream over at once (and
    // frees the connection; browsers allow ~6 per host across tabs). A page that comes back
    // from the back/forward cache or from being frozen missed what the other tabs were sent
    // meanwhile: its consumers catch up ('stale'), and it queues for the stream again.
    const leave = () => {
      this.abdicate();
      if (this.releaseVisible) this.releaseVisible();
    };
    window.addEventListener('pagehide', leave);
    document.addEventListener('freeze', leave);
    document.addEventListener('resume', () => this.resumed());
    window.addEventListener('pageshow', (event) => {
      if (event.persisted) this.resumed();
    });
    // Back online while waiting out a backoff: no reason to keep waiting.
    window.addEventListener('online', () => {
      if (this.isLeader && this.client.waiting) this.client.connect(false);
    });
  }

  get role() {
    if (this.isLeader) return 'leader';
    return this.shared ? 'follower' : '';
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  emit(message) {
    for (const listener of this.listeners) {
      try {
        listener(message);
      } catch (error) {
        // One consumer's failure must not keep the others from the event.
        report(error);
      }
    }
  }

  // What a consumer rendered from the server: known ids (never emitted again), the cursor,
  // and, with `unread`, the server's count of unread notifications at render time.
  seed(payloads, unread) {
    const fresh = [];
    for (const payload of payloads) {
      const id = notificationId(payload);
      if (!id) continue;
      this.newestId = Math.max(this.newestId, id);
      if (this.seen.has(id)) continue;
      this.seen.add(id);
      fresh.push(payload);
    }
    this.history.push(...fresh);
    if (Number.isSafeInteger(unread) && unread >= 0) this.setUnread(unread);
    // Other tabs take this render's history: it may hold rows the render claimed, which
    // the stream will not send them. (start() sends what was seeded before it.)
    if (this.started && fresh.length) this.publish({ type: 'hello', history: fresh });
  }

  // Join the election (or stream alone without Web Locks); consumers call it once ready.
  start() {
    if (this.started) return;
    this.started = true;
    this.trackVisibility();
    this.publish({ type: 'hello', history: this.history });
    this.seekLeadership();
  }

  setUnread(count) {
    if (this.unread === count) return;
    this.unread = count;
    this.emit({ type: 'unread', count });
  }

  // A change this tab made through the API ({ids | all, unread}): shown in this browser's
  // tabs at once; the stream's event brings it to other devices (and here again, harmlessly).
  applyLocally(type, data) {
    this.apply(type, data);
    this.publish({ type, data });
  }

  // --- Events --------------------------------------------------------------------------

  add(payload, fromStream) {
    const id = notificationId(payload);
    if (!id || this.seen.has(id)) return false;
    this.seen.add(id);
    this.newestId = Math.max(this.newestId, id);
    this.emit({ type: 'notification', payload, fromStream });
    if (this.unread !== null && payload.read !== true) this.setUnread(this.unread + 1);
    return true;
  }

  apply(type, data) {
    this.emit({ type, data });
    const unread = Number(data.unread);
    if (Number.isSafeInteger(unread) && unread >= 0) this.setUnread(unread);
  }

  received(type, data) {
    if (type === 'notification') {
      if (this.add(data, true)) this.publish({ type, payload: data });
    } else {
      this.apply(type, data);
      this.publish({ type, data });
    }
  }

  relayed(message) {
    if (!message || typeof message !== 'object') return;
    switch (message.type) {
      case 'notification':
        if (message.payload && typeof message.payload === 'object') this.add(message.payload, false);
        break;
      case 'read':
      case 'deleted':
        if (message.data && typeof message.data === 'object') this.apply(message.type, message.data);
        break;
      case 'resync':
        this.emit({ type: 'resync' });
        break;
      case 'state':
        if (this.isLeader) break;
        if (message.state === 'signed-out') {
          this.show('signed-out', 'Signed out.');
          this.signOut();
        } else {
          if (this.signedOut && message.state === 'live') this.rejoin();
          this.show(String(message.state), String(message.text));
        }
        break;
      case 'hello':
        // A new tab: tell it the connection state, and take its rendered history.
        if (this.isLeader) this.publish({ type: 'state', state: this.state, text: this.stateText });
        for (const payload of Array.isArray(message.history) ? message.history : []) {
          if (notificationId(payload) > this.newestId) this.add(payload, false);
        }
        break;
      default:
        break;
    }
  }

  publish(message) {
    if (this.channel) this.channel.postMessage(message);
  }

  show(state, text) {
    this.state = state;
    this.stateText = text;
    this.emit({ type: 'state', state, text });
  }

  announce(state, text) {
    // This tab's stream live again after it dropped: notifications missed meanwhile are
    // replayed after the cursor, read and deleted changes are not; every tab reads them again.
    const back = state === 'live' && this.streamWasLive;
    if (state === 'live') this.streamWasLive = true;
    this.show(state, text);
    if (this.isLeader) this.publish({ type: 'state', state, text });
    if (back) {
      this.emit({ type: 'resync' });
      this.publish({ type: 'resync' });
    }
    if (state === 'signed-out') this.signOut();
  }

  // --- Leadership ----------------------------------------------------------------------

  lead() {
    this.isLeader = true;
    this.emit({ type: 'role', role: this.role });
    this.client.start(this.state === 'connecting');
  }

  // Hold the leader lock until this tab leaves or is signed out; queue for it meanwhile.
  seekLeadership() {
    if (this.isLeader || this.waitForLeadership) return;
    if (!this.shared) {
      this.lead();
      return;
    }
    const controller = new AbortController();
    this.waitForLeadership = controller;
    this.locks
      .request(this.leaderLock, { signal: controller.signal }, () => {
        this.waitForLeadership = null;
        if (this.signedOut) return undefined;
        return new Promise((resolve) => {
          this.releaseLeadership = resolve;
          this.lead();
        });
      })
      .catch(() => {})
      .finally(() => {
        if (this.waitForLeadership === controller) this.waitForLeadership = null;
      });
  }

  abdicate() {
    const was = this.isLeader;
    this.isLeader = false;
    this.client.stop();
    if (this.waitForLeadership) this.waitForLeadership.abort();
    this.waitForLeadership = null;
    if (this.releaseLeadership) this.releaseLeadership();
    this.releaseLeadership = null;
    if (was) this.emit({ type: 'role', role: this.role });
  }

  // Signed out is true of every tab (one cookie jar): all of them stop, none keeps the lock,
  // and a tab opened after signing in again leads the rest back.
  signOut() {
    this.signedOut = true;
    this.abdicate();
  }

  rejoin() {
    this.signedOut = false;
    this.seekLeadership();
  }

  resumed() {
    this.emit({ type: 'stale' });
    if (!this.signedOut) this.seekLeadership();
    this.trackVisibility();
  }

  // --- Visibility across tabs ----------------------------------------------------------

  // Is any tab of this site, for this user, visible? Each visible tab holds a shared lock.
  async anyTabVisible() {
    if (isVisible()) return true;
    if (!this.shared) return false;
    try {
      const snapshot = await this.locks.query();
      return (snapshot.held || []).some((lock) => lock.name === this.visibleLock);
    } catch {
      return false;
    }
  }

  trackVisibility() {
    if (!this.shared) return;
    if (isVisible() && !this.visibleHeld) {
      this.visibleHeld = true;
      let granted = false;
      this.locks
        .request(this.visibleLock, { mode: 'shared' }, () => {
          granted = true;
          if (!isVisible()) return undefined;
          return new Promise((resolve) => {
            this.releaseVisible = resolve;
          });
        })
        .catch(() => {})
        .finally(() => {
          this.visibleHeld = false;
          this.releaseVisible = null;
          // Shown again while the lock was being let go; a refused request is not retried.
          if (granted && isVisible()) this.trackVisibility();
        });
    } else if (!isVisible() && this.releaseVisible) {
      this.releaseVisible();
    }
  }
}
