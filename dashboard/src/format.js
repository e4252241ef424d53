// @ts-check
// Figures and times for people: masses in kg or t with sensible decimals and the viewer's digit
// grouping, times in the viewer's time zone with UTC on hover. The API's exact figures (kg with six
// decimals) stay in the title, for whoever needs them.

/** Formatters by fraction digits (or significant digits, negative), made once. */
const formatters = new Map();

/** @param {number} digits fraction digits, or -n for n significant digits */
function formatter(digits) {
  let format = formatters.get(digits);
  if (!format) {
    format = new Intl.NumberFormat(undefined, digits < 0 ? { maximumSignificantDigits: -digits } : { maximumFractionDigits: digits });
    formatters.set(digits, format);
  }
  return format;
}

/**
 * A mass given in kg (the API's decimal string) in words: `0.212 kg`, `4.25 kg`, `850.5 kg`,
 * `12.3 t`, `1,235 t`. Below 1 kg, three significant digits, so that a small reading is not shown
 * as nothing.
 * @param {string} kg
 */
export function mass(kg) {
  const value = Number(kg);
  if (value === 0) return `${formatter(0).format(0)} kg`;
  if (Math.abs(value) < 1) return `${formatter(-3).format(value)} kg`;
  if (Math.abs(value) < 1000) return `${formatter(Math.abs(value) < 100 ? 2 : 1).format(value)} kg`;
  const tonnes = value / 1000;
  const digits = Math.abs(tonnes) < 10 ? 2 : Math.abs(tonnes) < 100 ? 1 : 0;
  return `${formatter(digits).format(tonnes)} t`;
}

/** A count with the viewer's digit grouping: `1,000`. @param {number} value */
export function count(value) {
  return formatter(0).format(value);
}

/** A rate of readings, to one decimal: `12.5 readings/s`. @param {number} perSecond */
export function rate(perSecond) {
  return `${formatter(1).format(perSecond)} readings/s`;
}

/** A percentage given as the API's decimal string, to one decimal: `83.4%`. @param {string} percent */
export function percent(percent) {
  return `${formatter(1).format(Number(percent))}%`;
}

/** `2026-12-04 19:59:27 UTC` @param {Date} at */
export function utc(at) {
  return `${at.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

const LOCAL = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });

/**
 * A time in the viewer's time zone, in a `<time>` whose title gives it in UTC; `none` without one.
 * @param {string | null} at RFC 3339
 * @param {string} [none]
 */
export function time(at, none = 'no readings yet') {
  if (!at) return document.createTextNode(none);
  const date = new Date(at);
  const element = document.createElement('time');
  element.dateTime = at;
  element.title = utc(date);
  element.textContent = LOCAL.format(date);
  return element;
}

/** A span of time, roughly: `4 min`, `3 h`, `2 d`. @param {number} ms */
export function duration(ms) {
  const minutes = Math.round(ms / 60_000);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h`;
  return `${Math.round(hours / 24)} d`;
}
