// Recovery: the gateway dies and comes back; nothing is lost, nothing is delivered twice.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CloseCode } from '../src/index.js';
import { client, gateway, publishViaApi, unique, waitFor } from './helpers.js';

test('after the gateway is killed and restarted, subscriptions and rooms come back', async (t) => {
  const alice = client(t, 'alice');
  const bob = client(t, 'bob');
  const channel = unique('chat:recover');
  const gappy = unique('tiny:gap'); // history of 3: a longer gap cannot be filled
  const received = [];
  const subscribed = [];
  const recoveryFailed = [];
  await alice.subscribe(channel, {
    onPublication: (p) => received.push(p),
    onSubscribed: (ctx) => subscribed.push(ctx),
  });
  await alice.subscribe(gappy, { onRecoveryFailed: (ctx) => recoveryFailed.push(ctx) });
  const roomId = unique('review');
  const room = await alice.joinRoom(roomId, { state: { frame: 1 } });
  const published = [];
  for (let i = 0; i < 2; i++) published.push(await publishViaApi(channel, { i }));
  await publishViaApi(gappy, { g: 0 });
  await waitFor(() => received.length === 2, 'the first two');

  const states = [];
  alice.on('state', ({ state }) => states.push(state));
  await gateway('kill');
  await waitFor(() => alice.state !== 'connected', 'alice noticing');
  for (let i = 2; i < 5; i++) published.push(await publishViaApi(channel, { i }));
  for (let g = 1; g < 6; g++) await publishViaApi(gappy, { g });
  await gateway('start');

  await waitFor(() => alice.state === 'connected', 'alice reconnected', 10000);
  await waitFor(() => received.length === 5, 'the missed three', 5000);
  for (let i = 5; i < 7; i++) published.push(await publishViaApi(channel, { i }));
  await waitFor(() => received.length === 7, 'two live ones after');

  assert.deepEqual(
    received.map((p) => p.offset),
    published.map((p) => p.offset),
  );
  assert.deepEqual(
    received.map((p) => p.data.i),
    [0, 1, 2, 3, 4, 5, 6],
  );
  const again = subscribed.at(-1);
  assert.equal(again.resubscribed, true);
  assert.equal(again.recovered, true);
  assert.ok(states.includes('disconnected') && states.at(-1) === 'connected', states.join());
  await waitFor(() => recoveryFailed.length === 1, 'the gap reported');
  assert.equal(recoveryFailed[0].channel, gappy);

  // The room was joined again: bob sees alice in it and her updates reach him.
  const bobRoom = await bob.joinRoom(roomId);
  assert.deepEqual(bobRoom.people, ['alice', 'bob']);
  assert.deepEqual(bobRoom.state, { frame: 1 });
  await alice.updateRoom(roomId, { frame: 2 });
  await waitFor(() => bobRoom.state.frame === 2, 'bob seeing frame 2');
  assert.equal(room.version, bobRoom.version);
});

test('a gateway shutting down (1012) is reconnected to once it is back', async (t) => {
  const alice = client(t, 'alice');
  const channel = unique('chat:restart');
  const received = [];
  await alice.subscribe(channel, { onPublication: (p) => received.push(p.data.n) });
  const disconnects = [];
  alice.on('disconnected', (info) => disconnects.push(info));
  await gateway('stop'); // SIGTERM: the gateway closes its sockets with 1012, then exits
  await publishViaApi(channel, { n: 1 });
  await gateway('start');
  await waitFor(() => received.length === 1, 'the publication made meanwhile', 10000);
  assert.equal(disconnects[0].code, CloseCode.SERVICE_RESTART);
  assert.equal(disconnects[0].reconnect, true);
  assert.equal(alice.state, 'connected');
});
