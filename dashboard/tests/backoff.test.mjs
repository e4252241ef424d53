// The retry schedule shared by the delivery queue and the live feed.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoff } from '../src/backoff.js';

test('retries wait 1 s doubling to 60 s, jittered between half and all of it', () => {
  const ceilings = [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000];
  ceilings.forEach((ceiling, i) => {
    assert.equal(backoff(i + 1, () => 0.999999), ceiling, `attempt ${i + 1} at most`);
    assert.equal(backoff(i + 1, () => 0), ceiling / 2, `attempt ${i + 1} at least`);
  });
  const spread = new Set(Array.from({ length: 50 }, () => backoff(3)));
  assert.ok(spread.size > 10, 'jittered');
});
