// Opt-in desktop notifications: shown by the tab that holds the stream, while no tab of the
// site is visible. The choice is kept in localStorage, so every tab follows it.

const STORAGE_KEY = 'notifications.desktop';
const supported = typeof Notification === 'function';
const watched = new WeakSet();

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY) === 'on';
  } catch {
    return false;
  }
}

let choice = stored();
const changeListeners = new Set();

function changed() {
  choice = stored();
  for (const listener of changeListeners) listener();
}

window.addEventListener('storage', (event) => {
  if (event.key === STORAGE_KEY) changed();
});
// Also when the stored value stays the same but the permission changed (granted in one tab).
const channel = typeof BroadcastChannel === 'function' ? new BroadcastChannel('notifications:desktop') : null;
if (channel) channel.addEventListener('message', changed);

function setWanted(on) {
  try {
    localStorage.setItem(STORAGE_KEY, on ? 'on' : 'off');
  } catch {
    // Storage disabled: the choice lasts as long as this page.
  }
  choice = on;
}

export function desktopOn() {
  return supported && Notification.permission === 'granted' && choice;
}

async function show(feed, title, payload) {
  if (!desktopOn() || (await feed.anyTabVisible())) return;
  try {
    // The tag also merges duplicates where every tab has its own stream (no Web Locks).
    const note = new Notification(title, {
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

// Show a desktop notification for each notification this tab's own stream receives (in a
// tab that relays them, the leader has shown it already). Once per feed, whoever asks.
export function watchDesktop(feed, title) {
  if (!supported || watched.has(feed)) return;
  watched.add(feed);
  feed.subscribe((message) => {
    if (message.type === 'notification' && message.fromStream) show(feed, title, message.payload);
  });
}

// The page's toggle: a button (aria-pressed) and a note that says what it does.
export function desktopControls(button, note) {
  function update() {
    if (!supported) {
      button.hidden = true;
      note.hidden = true;
      return;
    }
    note.hidden = false;
    if (Notification.permission === 'denied') {
      button.hidden = true;
      note.textContent = 'Desktop notifications are blocked in this browser’s site settings.';
      return;
    }
    button.hidden = false;
    const on = desktopOn();
    button.textContent = on ? 'Turn off desktop notifications' : 'Turn on desktop notifications';
    button.setAttribute('aria-pressed', String(on));
    note.textContent = on
      ? 'Shown while no tab of this site is visible.'
      : 'Get a desktop notification while no tab of this site is visible.';
  }

  async function toggle() {
    if (desktopOn()) {
      setWanted(false);
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
      setWanted(permission === 'granted');
    }
    update();
    if (channel) channel.postMessage('changed');
  }

  if (supported) button.addEventListener('click', toggle);
  changeListeners.add(update);
  update();
}
