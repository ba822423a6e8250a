// The bell ({% notifications_bell %}): a menu button (WAI-ARIA APG "Menu Button") with the
// unread count and the newest notifications, kept live by the tab's feed (leader.js): one
// stream per browser, shared with the page and every other tab. Opening a notification
// marks it read (then follows its link, in the same tab). Configuration comes from the
// root element's data- attributes, rendered by the template tag.

import { ApiError, listNotifications, markRead } from './api.js';
import { watchDesktop } from './desktop.js';
import { openFeed } from './leader.js';
import {
  eventIds,
  menuItem,
  normalize,
  placeById,
  refreshTimes,
  safeHref,
  setMenuItemRead,
  toId,
} from './render.js';

const CLOCK_MS = 30000;
// How long a followed link waits for its notification to be marked read.
const FOLLOW_TIMEOUT = 3000;
const DEFAULT_SIZE = 8;

function isVisible() {
  return document.visibilityState === 'visible';
}

function failure(error) {
  return error instanceof ApiError ? error.message : 'Something went wrong.';
}

class Bell {
  constructor(root) {
    this.root = root;
    this.button = root.querySelector('.notifications-bell-button');
    this.menu = root.querySelector('.notifications-bell-menu');
    this.group = root.querySelector('.notifications-bell-items');
    this.empty = root.querySelector('.notifications-bell-empty');
    this.count = root.querySelector('.notifications-bell-count');
    this.number = root.querySelector('.notifications-bell-number');
    this.label = root.querySelector('.notifications-bell-label');
    this.markAllItem = root.querySelector('[data-action="mark-all-read"]');
    this.status = root.querySelector('.notifications-bell-status');
    this.size = Number(root.dataset.size) || DEFAULT_SIZE;
    this.apiList = root.dataset.apiNotifications || '';
    this.apiRead = root.dataset.apiRead || '';
    this.csrfToken = root.dataset.csrfToken || '';
    this.typed = '';
    this.typedAt = 0;
    this.feed = openFeed({ streamUrl: root.dataset.streamUrl, user: root.dataset.user });

    this.button.addEventListener('click', () => (this.isOpen ? this.close(false) : this.open('first')));
    this.button.addEventListener('keydown', (event) => this.buttonKey(event));
    this.menu.addEventListener('keydown', (event) => this.menuKey(event));
    this.menu.addEventListener('click', (event) => this.clicked(event));
    this.menu.addEventListener('auxclick', (event) => this.clicked(event));
    // Closed by a click or a focus move anywhere else.
    document.addEventListener('pointerdown', (event) => {
      if (this.isOpen && !this.root.contains(event.target)) this.close(false);
    });
    this.root.addEventListener('focusout', (event) => {
      if (this.isOpen && event.relatedTarget && !this.root.contains(event.relatedTarget)) this.close(false);
    });
    window.addEventListener('resize', () => {
      if (this.isOpen) this.fit();
    });
    setInterval(() => {
      if (this.isOpen && isVisible()) refreshTimes(this.menu);
    }, CLOCK_MS);

    this.feed.subscribe((message) => this.heard(message));
    watchDesktop(this.feed, document.title);
    refreshTimes(this.menu);
    const unread = Number.parseInt(root.dataset.unread ?? '', 10);
    this.feed.seed(this.renderedPayloads(), Number.isSafeInteger(unread) ? unread : undefined);
    this.showUnread(this.feed.unread);
    this.root.dataset.role = this.feed.role;
    this.feed.start();
  }

  get isOpen() {
    return !this.menu.hidden;
  }

  // What the server rendered, as the payloads the stream would have sent.
  renderedPayloads() {
    return this.entries().map((li) => {
      const item = li.firstElementChild;
      return {
        id: Number(item?.dataset.id),
        text: item?.querySelector('.notifications-bell-text')?.textContent ?? '',
        created: item?.querySelector('time')?.dateTime ?? '',
        read: !item?.classList.contains('is-unread'),
        url: item?.getAttribute('href') ?? null,
        level: item?.querySelector('.notifications-level')?.dataset.level ?? 'info',
      };
    });
  }

  // The menu's notifications: each a list item holding the menu item, which has the data-id.
  entries() {
    return [...this.group.querySelectorAll(':scope > li')];
  }

  entry(id) {
    return this.group.querySelector(`:scope > li > [data-id="${id}"]`)?.parentElement ?? null;
  }

  // The menu's items in order, as the keyboard visits them.
  items() {
    return [...this.menu.querySelectorAll('[role="menuitem"]')].filter((item) => !item.closest('[hidden]'));
  }

  // --- Opening, closing, the keyboard --------------------------------------------------

  open(where) {
    this.menu.hidden = false;
    this.button.setAttribute('aria-expanded', 'true');
    this.fit();
    refreshTimes(this.menu);
    const items = this.items();
    const target = where === 'last' ? items[items.length - 1] : items[0];
    target?.focus();
  }

  // The menu hangs from the button's right edge; on a narrow screen, or with the bell near
  // the left edge, it moves sideways to stay on screen.
  fit() {
    this.menu.style.translate = '';
    const margin = 8;
    const box = this.menu.getBoundingClientRect();
    const width = document.documentElement.clientWidth;
    let shift = 0;
    if (box.left < margin) shift = margin - box.left;
    else if (box.right > width - margin) shift = width - margin - box.right;
    if (shift) this.menu.style.translate = `${Math.round(shift)}px 0`;
  }

  close(returnFocus) {
    if (!this.isOpen) return;
    this.menu.hidden = true;
    this.button.setAttribute('aria-expanded', 'false');
    if (returnFocus) this.button.focus();
  }

  buttonKey(event) {
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      event.preventDefault();
      this.open(event.key === 'ArrowDown' ? 'first' : 'last');
    }
    // Enter and Space click the button, which opens the menu on its first item.
  }

  menuKey(event) {
    const items = this.items();
    const current = items.indexOf(document.activeElement);
    const move = (index) => {
      event.preventDefault();
      items[(index + items.length) % items.length]?.focus();
    };
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    switch (event.key) {
      case 'ArrowDown':
        move(current + 1);
        break;
      case 'ArrowUp':
        move(current < 0 ? -1 : current - 1);
        break;
      case 'Home':
      case 'PageUp':
        move(0);
        break;
      case 'End':
      case 'PageDown':
        move(-1);
        break;
      case 'Escape':
        event.preventDefault();
        this.close(true);
        break;
      case 'Tab':
        // Focus moves on from the button, as if the menu were not there.
        this.close(false);
        break;
      case 'Enter':
      case ' ':
        if (current < 0) break;
        event.preventDefault();
        items[current].click();
        break;
      default:
        if (event.key.length === 1 && event.key.trim()) this.typeAhead(event, items, current);
        break;
    }
  }

  // Typed characters move to the next item that starts with them.
  typeAhead(event, items, current) {
    const now = Date.now();
    this.typed = now - this.typedAt < 700 ? this.typed + event.key.toLowerCase() : event.key.toLowerCase();
    this.typedAt = now;
    const name = (item) =>
      (item.querySelector('.notifications-bell-text') ?? item).textContent.trim().toLowerCase();
    const start = this.typed.length > 1 ? current : current + 1;
    for (let step = 0; step < items.length; step += 1) {
      const item = items[(start + step + items.length) % items.length];
      if (name(item).startsWith(this.typed)) {
        event.preventDefault();
        item.focus();
        return;
      }
    }
  }

  // --- Activating items ------------------------------------------------------------------

  clicked(event) {
    const item = event.target instanceof Element ? event.target.closest('[role="menuitem"]') : null;
    if (!item || !this.menu.contains(item)) return;
    // The middle button opens links elsewhere; on anything else it does nothing.
    if (event.type === 'auxclick' && !(item instanceof HTMLAnchorElement)) return;
    if (item.getAttribute('aria-disabled') === 'true') {
      event.preventDefault();
      return;
    }
    if (item.dataset.action === 'mark-all-read') {
      this.markAll();
      this.close(true);
      return;
    }
    const id = toId(item.dataset.id);
    if (id) this.openNotification(event, item, id);
    // Any other item is a plain link (the page): followed as it is.
  }

  // Opening a notification marks it read; one with a link is then followed in this tab (or
  // elsewhere, marked on the way, with a modifier key or the middle button).
  async openNotification(event, item, id) {
    const unread = item.classList.contains('is-unread');
    const href = item instanceof HTMLAnchorElement ? safeHref(item.getAttribute('href')) : null;
    if (!href) {
      if (unread) this.read({ ids: [id] }).catch((error) => this.say(`Could not mark as read: ${failure(error)}`));
      this.close(true);
      return;
    }
    const elsewhere = event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey;
    if (!unread) return;
    if (elsewhere) {
      this.read({ ids: [id] }, { keepalive: true }).catch(() => {});
      return;
    }
    event.preventDefault();
    await Promise.race([
      this.read({ ids: [id] }, { keepalive: true }).catch(() => {}),
      new Promise((resolve) => {
        setTimeout(resolve, FOLLOW_TIMEOUT);
      }),
    ]);
    window.location.assign(href);
  }

  async read(change, options) {
    if (!this.apiRead || !this.csrfToken) return;
    const unread = await markRead(this.apiRead, this.csrfToken, change, options);
    this.feed.applyLocally('read', { ...change, unread });
  }

  async markAll() {
    const newest = this.feed.newestId;
    try {
      await this.read(newest ? { all: true, newest } : { all: true });
    } catch (error) {
      this.say(`Could not mark as read: ${failure(error)}`);
    }
  }

  say(text) {
    if (this.status) this.status.textContent = text;
  }

  // --- What the feed hears -----------------------------------------------------------------

  heard(message) {
    switch (message.type) {
      case 'notification':
        this.add(normalize(message.payload));
        break;
      case 'read':
        this.markShownRead(message.data);
        break;
      case 'deleted':
        this.remove(eventIds(message.data));
        break;
      case 'unread':
        this.showUnread(message.count);
        break;
      case 'state':
        this.root.dataset.state = message.state;
        break;
      case 'role':
        this.root.dataset.role = message.role;
        break;
      case 'stale':
      case 'resync':
        this.refill(true);
        break;
      default:
        break;
    }
  }

  add(notification) {
    if (!notification.id || this.entry(notification.id)) return;
    const li = document.createElement('li');
    li.setAttribute('role', 'none');
    li.append(menuItem(notification));
    placeById(this.group, li, notification.id, (other) => Number(other.firstElementChild?.dataset.id));
    // The newest only; never the one the keyboard is on.
    const entries = this.entries();
    for (const extra of entries.slice(this.size).reverse()) {
      if (!extra.contains(document.activeElement)) extra.remove();
    }
    this.updateEmpty();
  }

  markShownRead(data) {
    if (data.all === true) {
      const newest = toId(data.newest) || Infinity;
      for (const li of this.entries()) {
        if (Number(li.firstElementChild.dataset.id) <= newest) setMenuItemRead(li.firstElementChild, true);
      }
      return;
    }
    for (const id of eventIds(data)) {
      const li = this.entry(id);
      if (li) setMenuItemRead(li.firstElementChild, true);
    }
  }

  remove(ids) {
    let removed = false;
    for (const id of ids) {
      const li = this.entry(id);
      if (!li) continue;
      if (li.contains(document.activeElement)) {
        // Keep the keyboard in the menu: on the next item, or the one before.
        const items = this.items();
        const index = items.indexOf(document.activeElement);
        const next = items[index + 1] ?? items[index - 1];
        li.remove();
        (next && next.isConnected ? next : this.items()[0])?.focus();
      } else {
        li.remove();
      }
      removed = true;
    }
    this.updateEmpty();
    if (removed) this.refill(false);
  }

  // Fill the menu up to its size from the API (after deletions), or reload it whole (after
  // this tab missed events).
  async refill(whole) {
    if (!this.apiList || (!whole && this.entries().length >= this.size)) return;
    let found;
    try {
      found = await listNotifications(this.apiList, { limit: this.size });
    } catch {
      return;
    }
    const wanted = new Set(found.notifications.map((payload) => toId(payload?.id)));
    if (whole) {
      for (const li of this.entries()) {
        const id = Number(li.firstElementChild?.dataset.id);
        if (!wanted.has(id) && !li.contains(document.activeElement)) li.remove();
      }
    }
    for (const payload of found.notifications) {
      const notification = normalize(payload);
      const li = this.entry(notification.id);
      if (li) setMenuItemRead(li.firstElementChild, notification.read);
      else this.add(notification);
    }
    if (found.unread !== null) this.feed.setUnread(found.unread);
  }

  updateEmpty() {
    if (this.empty) this.empty.hidden = this.entries().length > 0;
  }

  showUnread(count) {
    if (count === null) return;
    this.count.hidden = count === 0;
    this.number.textContent = count > 99 ? '99+' : String(count);
    this.label.textContent = `, ${count} unread`;
    if (this.markAllItem) {
      if (count === 0) this.markAllItem.setAttribute('aria-disabled', 'true');
      else this.markAllItem.removeAttribute('aria-disabled');
    }
  }
}

for (const root of document.querySelectorAll('[data-notifications-bell]')) {
  if (root.dataset.ready || !root.dataset.streamUrl) continue;
  root.dataset.ready = 'true';
  new Bell(root);
}
