// @ts-check
// The dashboard's forms: creating a site (#/new), and on a site page entering a reading by hand or
// simulating a sensor. Readings are not sent from here but queued: the queue delivers them.

import { ApiError, createSite } from './api.js';
import { h } from './dom.js';

/** @typedef {import('./api.js').SessionInfo} SessionInfo */
/** @typedef {import('./queue.js').Queue} Queue */
/** @typedef {{ element: HTMLElement, input: HTMLElement, error: HTMLElement }} Field */

/**
 * A labelled input with room for its error. @param {string} name @param {string} label
 * @param {Record<string, string>} attributes @param {string} [hint] @returns {Field}
 */
function field(name, label, attributes, hint) {
  const id = `field-${name}`;
  const input = attributes.tag === 'select' ? h('select', { id, name }) : h('input', { id, name, ...attributes });
  const error = h('p', { class: 'field-error', id: `${id}-error`, hidden: '' });
  input.setAttribute('aria-describedby', hint ? `${id}-hint ${id}-error` : `${id}-error`);
  const children = [h('label', { for: id }, [label]), input, error];
  if (hint) children.splice(2, 0, h('small', { id: `${id}-hint` }, [hint]));
  return { element: h('div', { class: 'field' }, children), input, error };
}

/**
 * Shows the envelope's problems beside their fields; any other goes to `notice`.
 * @param {Record<string, { input: HTMLElement, error: HTMLElement }>} fields
 * @param {HTMLElement} notice
 * @param {ApiError} error
 * @param {(path: string) => string} fieldOf maps a problem's path to a field name
 */
function showErrors(fields, notice, error, fieldOf) {
  clearErrors(fields, notice);
  const unplaced = [];
  for (const detail of error.details) {
    const target = fields[fieldOf(detail.path)];
    if (target) {
      target.error.textContent = `${detail.message}.`;
      target.error.hidden = false;
      target.input.setAttribute('aria-invalid', 'true');
    } else {
      unplaced.push(`${detail.path} ${detail.message}`);
    }
  }
  if (error.details.length === 0 || unplaced.length > 0) {
    notice.textContent = unplaced.length > 0 ? unplaced.join('; ') : error.message;
  }
  const first = Object.values(fields).find((f) => f.input.getAttribute('aria-invalid') === 'true');
  first?.input.focus();
}

/** @param {Record<string, { input: HTMLElement, error: HTMLElement }>} fields @param {HTMLElement} notice */
function clearErrors(fields, notice) {
  for (const { input, error } of Object.values(fields)) {
    error.hidden = true;
    error.textContent = '';
    input.removeAttribute('aria-invalid');
  }
  notice.textContent = '';
}

/** Now, as a datetime-local value (local time, to the second). */
function localNow() {
  const now = new Date();
  now.setMinutes(now.getMinutes() - now.getTimezoneOffset());
  return now.toISOString().slice(0, 19);
}

/**
 * The form to enter one reading for `siteId`; `say` reports that it was queued.
 * @param {Queue} queue @param {number} siteId @param {(text: string) => void} say
 * @returns {{ form: HTMLElement, refuse: (error: ApiError) => void }} `refuse` shows the server's
 *   refusal of a reading sent from it beside its fields
 */
export function readingForm(queue, siteId, say) {
  const fields = {
    source_id: field('source_id', 'Source', { value: 'manual', required: '', maxlength: '64', autocomplete: 'off' }),
    timestamp: field('timestamp', 'Time of the reading', { type: 'datetime-local', step: '1', value: localNow() }, 'Your local time'),
    value: field('value', 'Value', { inputmode: 'decimal', autocomplete: 'off' }, 'A decimal number, e.g. 12.5'),
    unit: field('unit', 'Unit', { tag: 'select' }),
  };
  fields.unit.input.append(...['kg', 'g', 't'].map((unit) => h('option', { value: unit }, [unit])));
  const notice = h('p', { class: 'notice error', role: 'alert' });
  const form = h('form', { id: 'ingest-form', novalidate: '' }, [
    h('h2', {}, ['Enter a reading']),
    notice,
    ...Object.values(fields).map((f) => f.element),
    h('button', { type: 'submit' }, ['Queue and send']),
  ]);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(fields, notice);
    const value = (/** @type {keyof typeof fields} */ name) => /** @type {HTMLInputElement} */ (fields[name].input).value;
    const local = value('timestamp');
    const at = new Date(local);
    const reading = {
      source_id: value('source_id'),
      timestamp: Number.isNaN(at.getTime()) ? local : at.toISOString(),
      value: value('value'),
      unit: value('unit'),
    };
    await queue.add(siteId, [reading], 'form');
    say('The reading is queued; it is sent now and kept until the server has stored it.');
  });
  const fieldOf = (/** @type {string} */ path) => path.replace(/^readings\[\d+\]\./, '');
  return { form, refuse: (error) => showErrors(fields, notice, error, fieldOf) };
}

/**
 * The form that queues a batch of made-up readings for `siteId`, as a sensor would send them.
 * @param {Queue} queue @param {number} siteId @param {(text: string) => void} say
 */
export function sensorForm(queue, siteId, say) {
  const count = field('sensor_count', 'Readings to generate', { type: 'number', min: '1', max: '1000', value: '20' });
  const form = h('form', { id: 'sensor-form' }, [
    h('h2', {}, ['Simulate a sensor']),
    h('p', {}, ['Generates readings one a minute up to now, from source ', h('code', {}, ['simulated']), ', as one batch.']),
    count.element,
    h('button', { type: 'submit', class: 'secondary' }, ['Simulate sensor']),
  ]);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const n = Math.max(1, Math.min(1000, Number(/** @type {HTMLInputElement} */ (count.input).value) || 20));
    const now = Math.floor(Date.now() / 60000) * 60000;
    const readings = Array.from({ length: n }, (_, i) => ({
      source_id: 'simulated',
      timestamp: new Date(now - (n - 1 - i) * 60000).toISOString(),
      value: (0.5 + Math.random() * 2).toFixed(3),
      unit: 'kg',
    }));
    await queue.add(siteId, readings, 'sensor');
    say(`${n} simulated readings are queued.`);
  });
  return form;
}

/** Shows the create-a-site view (#/new) in `view`. @param {HTMLElement} view @param {SessionInfo} session */
export function newSite(view, session) {
  if (!session.can_create_sites) {
    view.replaceChildren(h('h1', {}, ['New site']), h('p', {}, ['This session may not create sites.']));
    return;
  }
  const fields = {
    name: field('name', 'Name', { required: '', maxlength: '200', autocomplete: 'off' }),
    emission_limit: field('emission_limit', 'Emission limit (kg)', { inputmode: 'decimal', required: '', autocomplete: 'off' }),
  };
  const notice = h('p', { class: 'notice error', role: 'alert' });
  const form = h('form', { id: 'site-form', novalidate: '' }, [
    notice,
    ...Object.values(fields).map((f) => f.element),
    h('button', { type: 'submit' }, ['Create site']),
  ]);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(fields, notice);
    const value = (/** @type {'name' | 'emission_limit'} */ name) => /** @type {HTMLInputElement} */ (fields[name].input).value;
    try {
      const site = await createSite({ name: value('name'), emission_limit: value('emission_limit') });
      location.hash = `#/sites/${site.id}`;
    } catch (error) {
      const refused = error instanceof ApiError ? error : new ApiError(0, 'NETWORK', String(error), []);
      showErrors(fields, notice, refused, (path) => path);
    }
  });
  view.replaceChildren(h('h1', {}, ['New site']), form);
}
