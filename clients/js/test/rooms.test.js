// Rooms: join, versioned updates, conflicts and retries, pushes to the other members, leave.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, SwitchboardError } from '../src/index.js';
import { client, rejection, unique, waitFor } from './helpers.js';

test('two members share a room: updates reach the other, versions grow by one', async (t) => {
  const alice = client(t, 'alice');
  const bob = client(t, 'bob');
  const id = unique('review');
  const room = await alice.joinRoom(id, { state: { frame: 0 } });
  assert.deepEqual([room.version, room.state, room.people], [1, { frame: 0 }, ['alice']]);

  const seen = [];
  const bobRoom = await bob.joinRoom(id, { onRoom: (r, change) => seen.push([r.version, change]) });
  assert.deepEqual(bobRoom.state, { frame: 0 });
  assert.deepEqual(bobRoom.people, ['alice', 'bob']);
  await waitFor(() => room.people.length === 2, 'alice seeing bob');
  assert.equal(room.version, bobRoom.version);

  const everyRoom = [];
  bob.onRoom((r) => everyRoom.push(r.room));
  await alice.updateRoom(id, { frame: 120, note: 'hi' }, { version: true });
  assert.deepEqual(room.state, { frame: 120, note: 'hi' });
  await waitFor(() => bobRoom.version === room.version, 'bob at alice version');
  assert.deepEqual(bobRoom.state, { frame: 120, note: 'hi' });
  assert.ok(seen.some(([, change]) => change.patch?.frame === 120));
  assert.deepEqual(everyRoom, [id]);

  await alice.updateRoom(id, { note: null }); // merge patch: null deletes
  await waitFor(() => !('note' in bobRoom.state), 'the note deleted for bob');
  assert.deepEqual(bobRoom.state, { frame: 120 });
});

test('a stale version is a conflict (113) carrying the current room; retries resolve it', async (t) => {
  const alice = client(t, 'alice');
  const bob = client(t, 'bob');
  const id = unique('review');
  await alice.joinRoom(id, { state: { count: 0 } });
  const bobRoom = await bob.joinRoom(id);
  const stale = bobRoom.version;
  await alice.updateRoom(id, { count: 1 });

  const conflict = await rejection(bob.updateRoom(id, { count: 100 }, { version: stale }));
  assert.ok(conflict instanceof SwitchboardError);
  assert.equal(conflict.code, ErrorCode.CONFLICT);
  assert.equal(conflict.version, stale + 1);
  assert.deepEqual(conflict.state, { count: 1 });

  // Both increment from the same version: the loser retries against the newer state.
  const increment = (state) => ({ count: state.count + 1 });
  const version = bobRoom.version;
  await waitFor(() => bobRoom.state.count === 1, 'bob seeing count 1');
  await alice.updateRoom(id, { count: 2 }, { version });
  const after = await bob.updateRoom(id, increment, { version, retries: 2 });
  assert.equal(after.state.count, 3);
  assert.deepEqual((await alice.getRoom(id)).state, { count: 3 });
});

test('leaving a room updates its people; room errors carry their codes', async (t) => {
  const alice = client(t, 'alice');
  const bob = client(t, 'bob');
  const id = unique('review');
  const room = await alice.joinRoom(id);
  await bob.joinRoom(id);
  await waitFor(() => room.people.includes('bob'), 'bob in the room');
  const left = await bob.leaveRoom(id);
  assert.deepEqual(left.people, ['alice']);
  await waitFor(() => room.people.length === 1, 'alice seeing bob leave');

  assert.equal((await rejection(bob.updateRoom(id, { x: 1 }))).code, ErrorCode.NOT_SUBSCRIBED);
  assert.equal((await rejection(alice.joinRoom(id))).code, ErrorCode.ALREADY_SUBSCRIBED);
  assert.equal((await rejection(alice.joinRoom('bad room'))).code, ErrorCode.BAD_REQUEST);
  assert.equal(
    (await rejection(alice.updateRoom(id, 'not an object'))).code,
    ErrorCode.BAD_REQUEST,
  );
  assert.equal((await rejection(alice.joinRoom('preview:x'))).code, ErrorCode.PERMISSION_DENIED);
  assert.deepEqual((await alice.getRoom(unique('none'))).version, 0);
});
