// The client's pure parts: JSON merge patch (RFC 7386) and stream offsets.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, SwitchboardError, compareOffsets, isTerminalClose, mergePatch } from '../src/index.js';

test('mergePatch follows the examples of RFC 7386', () => {
  const cases = [
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: 'b', b: 'c' }, { a: null }, { b: 'c' }],
    [{ a: ['b'] }, { a: 'c' }, { a: 'c' }],
    [{ a: 'c' }, { a: ['b'] }, { a: ['b'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: [{ b: 'c' }] }, { a: [1] }, { a: [1] }],
    [['a', 'b'], ['c', 'd'], ['c', 'd']],
    [{ a: 'b' }, ['c'], ['c']],
    [{ a: 'foo' }, null, null],
    [{ a: 'foo' }, 'bar', 'bar'],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: 'b', c: null }, { a: 'b' }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [target, patch, expected] of cases) {
    const before = structuredClone(target);
    assert.deepEqual(mergePatch(target, patch), expected, JSON.stringify([target, patch]));
    assert.deepEqual(target, before); // the target is not modified
  }
});

test('offsets compare as numbers, milliseconds first', () => {
  assert.ok(compareOffsets('9-0', '10-0') < 0);
  assert.ok(compareOffsets('10-2', '10-10') < 0);
  assert.equal(compareOffsets('1732222-3', '1732222-3'), 0);
  assert.ok(compareOffsets('1732223-0', '1732222-99') > 0);
});

test('close codes 4500-4999 are terminal; errors keep their code and details', () => {
  assert.deepEqual([4499, 4500, 4504, 4999, 5000, 1012, 4001].map(isTerminalClose), [
    false, true, true, true, false, false, false,
  ]);
  const err = SwitchboardError.fromReply({ code: 113, message: 'stale', version: 2, state: {} });
  assert.ok(err instanceof Error);
  assert.equal(err.code, ErrorCode.CONFLICT);
  assert.equal(err.version, 2);
  assert.equal(err.message, 'stale');
  assert.equal(SwitchboardError.fromReply({ code: 108, message: 'x', temporary: true }).temporary, true);
});
