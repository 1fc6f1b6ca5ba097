// rpc: tasks of the handlers service (see TASKS in tests/clients/conftest.py).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, SwitchboardError } from '../src/index.js';
import { client, rejection, token } from './helpers.js';

test('rpc returns what the task returned, with the caller and the room', async (t) => {
  const alice = client(t, 'alice');
  const result = await alice.rpc('echo', { shot: 'sh010' }, { room: 'review-1' });
  assert.deepEqual(result, { data: { shot: 'sh010' }, user: 'alice', room: 'review-1' });
  assert.deepEqual((await alice.rpc('echo')).data, null);
});

test('rpc errors: unknown method 104, refused 103, task failed 115, task timeout 114', async (t) => {
  const alice = client(t, 'alice');
  const unknown = await rejection(alice.rpc('no.such.method', {}));
  assert.ok(unknown instanceof SwitchboardError);
  assert.equal(unknown.code, ErrorCode.METHOD_NOT_FOUND);
  assert.equal((await rejection(alice.rpc('admin'))).code, ErrorCode.PERMISSION_DENIED);
  const failed = await rejection(alice.rpc('fail'));
  assert.equal(failed.code, ErrorCode.TASK_FAILED);
  assert.match(failed.message, /no such shot/);
  assert.equal((await rejection(alice.rpc('stuck'))).code, ErrorCode.TIMEOUT);

  const admin = client(t, 'root', { token: token('root', { scope: 'admin' }) });
  assert.equal(await admin.rpc('admin'), 'done');
});

test('rpc gives up after its own timeout; later commands are not held up', async (t) => {
  const alice = client(t, 'alice');
  await alice.ready();
  const slow = alice.rpc('slow', null, { timeout: 300 });
  const started = Date.now();
  await alice.ping(); // answered at once, before the slow task's answer
  assert.ok(Date.now() - started < 1000);
  const err = await rejection(slow);
  assert.equal(err.code, ErrorCode.TIMEOUT);
  assert.match(err.message, /300 ms/);
  await alice.ping(); // the task's late answer, when it comes, is dropped quietly
});
