// @ts-check
// The dashboard: an overview of every site, a page per site, a form to create one, and the queue of
// readings entered here. Views are chosen by the URL's fragment (#/, #/sites/7, #/new); each needs a
// session, and shows only what that session may do. Without one, the sign-in view stands in.
// This module routes between the views and ties the session to the live feed and the queue.

import { existingSession, onSessionEnded, signIn } from './api.js';
import { newSite } from './forms.js';
import { Feed } from './live.js';
import { overview } from './overview.js';
import { Queue } from './queue.js';
import { queuePanel } from './queue-panel.js';
import { handleSignOut, hideAccount, refusal, showAccount, showSignIn, takeLinkToken } from './session.js';
import { sitePage } from './site-page.js';

/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {import('./session.js').SignInPrompt} SignInPrompt */

const feed = new Feed();
const queue = new Queue();
const view = /** @type {HTMLElement} */ (document.getElementById('view'));
/** What the current view must undo when another replaces it. */
let leaveView = () => {};
/** @type {SessionInfo | null} who is signed in; null while the sign-in view is shown */
let session = null;

const STATE_WORDS = {
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  'signed-out': 'Signed out',
  refused: 'This session may not follow the sites',
};

function route() {
  // Signed out, the sign-in view stays whatever the address: the view asked for opens after.
  if (!session) return;
  leaveView();
  leaveView = () => {};
  const site = location.hash.match(/^#\/sites\/(\d+)$/);
  if (site) leaveView = sitePage(view, feed, queue, session, Number(site[1]));
  else if (location.hash === '#/new') newSite(view, session);
  else leaveView = overview(view, feed, session);
  view.focus();
}

const connection = /** @type {HTMLElement} */ (document.getElementById('connection'));
feed.onState((state) => {
  connection.dataset.state = state;
  connection.textContent = STATE_WORDS[state];
});
const drop = /** @type {HTMLInputElement} */ (document.getElementById('drop-responses'));
drop.checked = localStorage.getItem('plume.dropFirstResponse') === 'true';
queue.dropFirstResponse = drop.checked;
drop.addEventListener('change', () => {
  queue.dropFirstResponse = drop.checked;
  localStorage.setItem('plume.dropFirstResponse', String(drop.checked));
});

/** Opens the dashboard for a session: the view asked for, the live feed, the queue's deliveries. */
function enter(/** @type {SessionInfo} */ signedIn) {
  session = signedIn;
  showAccount(signedIn);
  // The feed first: it forgets the last session's sites before a view shows them.
  feed.start();
  route();
  queue.resume();
}

/**
 * Shows the sign-in view in place of the dashboard. The feed stops; the queue keeps its batches,
 * under their keys, for the next session. A sign-in form already shown is left as the user left it.
 * @param {SignInPrompt} why
 */
function leave(why) {
  feed.stop();
  queue.hold();
  if (!session && document.getElementById('sign-in-form') && !why.error) return;
  session = null;
  hideAccount();
  leaveView();
  leaveView = () => {};
  showSignIn(view, why, enter);
}

/** Signs in with a sign-in link's token, if the address is one. @returns {Promise<boolean>} whether it was */
async function followLink() {
  const token = takeLinkToken();
  if (token === null) return false;
  try {
    enter(await signIn(token));
  } catch (error) {
    leave({ error: refusal(error, true) });
  }
  return true;
}

onSessionEnded(() => leave({
  reason: 'Your session has ended: it expired, was revoked, or was signed out elsewhere. Sign in again; readings waiting to be delivered are kept and sent once you do.',
}));
handleSignOut(leave);
window.addEventListener('hashchange', async () => {
  if (!(await followLink())) route();
});
const showQueue = queuePanel(queue);
queue.changeListeners.add(showQueue);
showQueue();
queue.start();
if (!(await followLink())) {
  const existing = await existingSession();
  if (existing) enter(existing);
  else leave({});
}
