// @ts-check
// Signing in and out: the sign-in view, sign-in links, and the header's account line.
// A token is typed into a password field or arrives in a sign-in link's fragment (#sign-in=<token>);
// either way it goes straight to POST /v2/session, which answers with an HttpOnly cookie that the
// page never sees. The token itself is never kept: not in storage, not in the address bar, not in
// the console.

import { ApiError, signIn, signOut } from './api.js';
import { h } from './dom.js';

/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {{ reason?: string, error?: string }} SignInPrompt why the form is shown, and a refusal to show at once */

const account = /** @type {HTMLElement} */ (document.getElementById('account'));
const accountName = /** @type {HTMLElement} */ (document.getElementById('account-name'));
const accountError = /** @type {HTMLElement} */ (document.getElementById('account-error'));
const newSiteLink = /** @type {HTMLElement} */ (document.getElementById('nav-new'));

/**
 * The token of a sign-in link, if the address is one. The fragment is removed at once, replacing
 * this history entry, so that the token is neither bookmarked, shared nor kept in the history.
 */
export function takeLinkToken() {
  const link = location.hash.match(/^#sign-in=([^&]+)$/);
  if (!link) return null;
  history.replaceState(history.state, '', `${location.pathname}${location.search}`);
  return link[1];
}

/**
 * Why a token was not accepted, in words. @param {unknown} error
 * @param {boolean} [link] whether it came from a sign-in link
 */
export function refusal(error, link = false) {
  if (!(error instanceof ApiError)) return `Signing in failed: ${error}.`;
  if (error.status === 401) {
    return link
      ? 'This sign-in link was not accepted: each link works once, and only for a while. Sign in with a token instead.'
      : 'This token was not accepted: it may be mistyped, expired or revoked.';
  }
  if (error.status === 429) return `Too many attempts: try again in ${error.retryAfter || 'a few'} seconds.`;
  if (error.status === 0) return 'The server cannot be reached: try again in a moment.';
  return `Signing in failed: ${error.message}.`;
}

/**
 * Shows the sign-in form in `view`; calls `enter` once a token is accepted.
 * @param {HTMLElement} view @param {SignInPrompt} why @param {(signedIn: SessionInfo) => void} enter
 */
export function showSignIn(view, { reason = '', error = '' }, enter) {
  const input = /** @type {HTMLInputElement} */ (h('input', {
    id: 'sign-in-token',
    name: 'token',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: '',
    'aria-describedby': 'sign-in-reason sign-in-token-hint sign-in-error',
  }));
  const problem = h('p', { id: 'sign-in-error', class: 'notice error', role: 'alert' }, [error]);
  const button = /** @type {HTMLButtonElement} */ (h('button', { type: 'submit' }, ['Sign in']));
  const form = h('form', { id: 'sign-in-form', novalidate: '' }, [
    problem,
    h('div', { class: 'field' }, [
      h('label', { for: 'sign-in-token' }, ['Token']),
      input,
      h('small', { id: 'sign-in-token-hint' }, ['A plume token (plume_…), from your administrator or ', h('code', {}, ['plume tokens create'])]),
    ]),
    button,
  ]);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    problem.textContent = '';
    if (!token) {
      problem.textContent = 'Enter a token.';
      input.focus();
      return;
    }
    button.disabled = true;
    try {
      const signedIn = await signIn(token);
      input.value = '';
      enter(signedIn);
    } catch (caught) {
      problem.textContent = refusal(caught);
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  view.replaceChildren(
    h('h1', {}, ['Sign in']),
    h('p', { id: 'sign-in-reason', class: 'notice', role: 'status' }, [reason]),
    form,
  );
  input.focus();
}

/** Shows who is signed in in the header, and the links their session may use. @param {SessionInfo} signedIn */
export function showAccount(signedIn) {
  accountName.textContent = `${signedIn.client_name} (${signedIn.kind})`;
  accountError.textContent = '';
  account.hidden = false;
  newSiteLink.hidden = !signedIn.can_create_sites;
}

export function hideAccount() {
  account.hidden = true;
}

/** Makes the header's button sign out; `leave` then shows the sign-in view. @param {(why: SignInPrompt) => void} leave */
export function handleSignOut(leave) {
  /** @type {HTMLElement} */ (document.getElementById('sign-out')).addEventListener('click', async () => {
    accountError.textContent = '';
    try {
      await signOut();
    } catch (error) {
      // A 401 says the session had ended already: signed out either way.
      if (!(error instanceof ApiError && error.status === 401)) {
        accountError.textContent = `Not signed out: ${error instanceof ApiError ? error.message : error}.`;
        return;
      }
    }
    leave({ reason: 'You are signed out.' });
  });
}
