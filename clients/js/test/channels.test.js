// Subscriptions, publications, history, presence and the protocol's error codes.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ErrorCode, SwitchboardError } from '../src/index.js';
import { URL, client, next, publishViaApi, rejection, token, unique, waitFor } from './helpers.js';

test('a publication reaches a subscriber once, with its offset, in order', async (t) => {
  const alice = client(t, 'alice');
  const bob = client(t, 'bob');
  const channel = unique('chat:deliver');
  const received = [];
  const sub = await alice.subscribe(channel, { onPublication: (pub) => received.push(pub) });
  assert.equal(sub.subscribed, true);
  assert.equal(alice.state, 'connected');

  const first = await bob.publish(channel, { text: 'one' });
  const second = await publishViaApi(channel, { text: 'two' });
  await waitFor(() => received.length === 2, 'two publications');
  assert.deepEqual(
    received.map((p) => [p.channel, p.offset, p.data.text]),
    [
      [channel, first.offset, 'one'],
      [channel, second.offset, 'two'],
    ],
  );
  assert.equal(first.epoch, second.epoch);
  assert.equal(sub.offset, second.offset);
});

test('commands sent before the connection is up wait for it', async (t) => {
  const alice = client(t, 'alice');
  assert.notEqual(alice.state, 'connected');
  const channel = unique('chat:early');
  const result = await alice.publish(channel, { early: true });
  assert.match(result.offset, /^\d+-\d+$/);
  const history = await alice.history(channel);
  assert.deepEqual(history.publications.map((p) => p.data), [{ early: true }]);
});

test('history returns what was published, and what came after a position', async (t) => {
  const alice = client(t);
  const channel = unique('chat:history');
  const offsets = [];
  for (let i = 0; i < 4; i++) offsets.push((await publishViaApi(channel, { i })).offset);
  const all = await alice.history(channel);
  assert.deepEqual(all.publications.map((p) => p.data.i), [0, 1, 2, 3]);
  assert.equal(all.offset, offsets[3]);
  const since = await alice.history(channel, { since: { offset: offsets[1], epoch: all.epoch } });
  assert.deepEqual(since.publications.map((p) => p.offset), offsets.slice(2));
  const limited = await alice.history(channel, { limit: 1 });
  assert.equal(limited.publications.length, 1);
});

test('a subscribe with a kept position delivers what was missed', async (t) => {
  const alice = client(t);
  const channel = unique('chat:since');
  const first = await publishViaApi(channel, { n: 1 });
  await publishViaApi(channel, { n: 2 });
  await publishViaApi(channel, { n: 3 });
  const received = [];
  const subscribed = [];
  await alice.subscribe(
    channel,
    { onPublication: (p) => received.push(p.data.n), onSubscribed: (ctx) => subscribed.push(ctx) },
    { since: { offset: first.offset, epoch: first.epoch } },
  );
  assert.deepEqual(received, [2, 3]);
  assert.equal(subscribed[0].recovered, true);
  assert.equal(subscribed[0].resubscribed, false);
});

test('presence lists the subscribers; join and leave reach the others', async (t) => {
  const alice = client(t, 'alice');
  const bob = client(t, 'bob');
  const channel = unique('chat:presence');
  const joins = [];
  const leaves = [];
  await alice.subscribe(channel, { onJoin: (i) => joins.push(i), onLeave: (i) => leaves.push(i) });
  await bob.subscribe(channel);
  await waitFor(() => joins.some((i) => i.user === 'bob'), 'bob joining');
  const clients = await alice.presence(channel);
  assert.deepEqual(Object.values(clients).map((c) => c.user).sort(), ['alice', 'bob']);
  assert.ok(clients[alice.client] && clients[bob.client]);
  await bob.unsubscribe(channel);
  await waitFor(() => leaves.some((i) => i.user === 'bob'), 'bob leaving');
  assert.deepEqual(Object.values(await alice.presence(channel)).map((c) => c.user), ['alice']);
});

test('unsubscribe stops delivery', async (t) => {
  const alice = client(t);
  const channel = unique('chat:unsub');
  const received = [];
  await alice.subscribe(channel, { onPublication: (p) => received.push(p.data) });
  await alice.unsubscribe(channel);
  await publishViaApi(channel, { late: true });
  const other = unique('chat:marker');
  await alice.subscribe(other, { onPublication: (p) => received.push(p.data) });
  await publishViaApi(other, { marker: true });
  await waitFor(() => received.length > 0, 'the marker');
  assert.deepEqual(received, [{ marker: true }]);
});

test('errors carry the protocol codes', async (t) => {
  const alice = client(t, 'alice');
  const denied = await rejection(alice.publish('news', { x: 1 })); // no client publish there
  assert.ok(denied instanceof SwitchboardError);
  assert.equal(denied.code, ErrorCode.PERMISSION_DENIED);

  assert.equal((await rejection(alice.subscribe('nowhere:x'))).code, ErrorCode.UNKNOWN_CHANNEL);
  assert.equal((await rejection(alice.subscribe('user:#bob'))).code, ErrorCode.PERMISSION_DENIED);
  assert.equal(alice.getSubscription('user:#bob'), undefined); // a refused subscribe is forgotten
  assert.equal((await rejection(alice.presence('zou:events'))).code, ErrorCode.NOT_AVAILABLE);

  const channel = unique('chat:twice');
  await alice.subscribe(channel);
  assert.equal((await rejection(alice.subscribe(channel))).code, ErrorCode.ALREADY_SUBSCRIBED);

  const bogus = { offset: '1-0', epoch: 'not-the-epoch' };
  await publishViaApi(channel, {});
  const gone = await rejection(alice.history(channel, { since: bogus }));
  assert.equal(gone.code, ErrorCode.UNRECOVERABLE_POSITION);

  // The connection is still fine after all of that.
  assert.equal(alice.state, 'connected');
  await alice.ping();
});

test('state events: connecting, connected, then closed on close()', async (t) => {
  const alice = client(t, 'alice', { autoConnect: false });
  const states = [];
  alice.on('state', ({ state }) => states.push(state));
  const [connected] = await Promise.all([next(alice, 'connected'), alice.connect()]);
  assert.equal(connected[0].user, 'alice');
  assert.equal(typeof connected[0].client, 'string');
  alice.close();
  assert.deepEqual(states, ['connecting', 'connected', 'closed']);
  const err = await rejection(alice.publish('chat:x', {}));
  assert.equal(err.code, ErrorCode.CLOSED);
});

test('a WebSocket constructor given in the options is the one used', async (t) => {
  const { WebSocket: NodeWebSocket } = await import('ws');
  const opened = [];
  class Recorded extends NodeWebSocket {
    constructor(url) {
      super(url);
      opened.push(url);
    }
  }
  const alice = client(t, 'alice', { WebSocket: Recorded });
  await alice.ready();
  await alice.ping();
  assert.deepEqual(opened, [URL]);
});

test('the WebSocket used: the global one where there is one, else the ws package', async (t) => {
  const alice = client(t);
  await alice.ready();
  const { WebSocket: NodeWebSocket } = await import('ws');
  if (process.env.SB_GLOBAL_WEBSOCKET) {
    // `node --experimental-websocket`: the browser's WebSocket API, as in a browser.
    assert.equal(typeof globalThis.WebSocket, 'function');
    assert.ok(alice._ws instanceof globalThis.WebSocket);
  } else {
    assert.equal(globalThis.WebSocket, undefined);
    assert.ok(alice._ws instanceof NodeWebSocket);
  }
});

test('a channel token opens a channel the user could not subscribe to', async (t) => {
  const alice = client(t, 'alice');
  const channel = 'user:#bob';
  assert.equal((await rejection(alice.subscribe(channel))).code, ErrorCode.PERMISSION_DENIED);
  const received = [];
  const grant = token('alice', { channel });
  await alice.subscribe(channel, { onPublication: (p) => received.push(p.data) }, { token: grant });
  await publishViaApi(channel, { for: 'bob and alice' });
  await waitFor(() => received.length === 1, 'the publication');
  const forged = token('alice', { channel: 'user:#carol' });
  const err = await rejection(alice.subscribe('user:#dave', {}, { token: forged }));
  assert.equal(err.code, ErrorCode.PERMISSION_DENIED);
});
