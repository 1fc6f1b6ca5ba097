// The connection's life: token refresh through getToken, expiry, terminal close codes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { CloseCode, ErrorCode, Switchboard } from '../src/index.js';
import { URL, api, client, next, publishViaApi, rejection, token, unique, waitFor } from './helpers.js';

test('getToken refreshes the token before it expires: the socket stays open', async (t) => {
  let firstExpiry = null;
  const getToken = async () => {
    const jwt = token('alice', { ttl: 3 });
    firstExpiry ??= JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url')).exp * 1000;
    return jwt;
  };
  const alice = client(t, 'alice', { token: undefined, getToken });
  const refreshed = [];
  alice.on('refreshed', (r) => refreshed.push(r));
  const channel = unique('chat:refresh');
  const received = [];
  await alice.subscribe(channel, { onPublication: (p) => received.push(p.data) });
  const states = [];
  alice.on('state', ({ state }) => states.push(state));
  // Past the first token's expiry and the server's next sweep (every second): without the
  // refreshes the server would have closed the socket with 4001 by now.
  await waitFor(() => Date.now() > firstExpiry + 1500, 'the first token expired', 8000);
  assert.ok(refreshed.length >= 1);
  assert.ok(refreshed.every((r) => r.expiresIn >= 1 && r.expiresIn <= 3));
  assert.deepEqual(states, []);
  assert.equal(alice.state, 'connected');
  await publishViaApi(channel, { still: 'here' });
  await waitFor(() => received.length === 1, 'a publication after the refreshes');
});

test('an expired token without getToken: 4001, and no reconnect', async (t) => {
  const alice = client(t, 'alice', { token: token('alice', { ttl: 1 }) }); // 4001 at connect or soon after
  const [disconnected] = await next(alice, 'disconnected', 6000);
  assert.equal(disconnected.code, CloseCode.TOKEN_EXPIRED);
  assert.equal(disconnected.reconnect, false);
  assert.equal(alice.state, 'closed');
});

test('an expired token with getToken: 4001, then a reconnect on a fresh token', async (t) => {
  let calls = 0;
  const alice = new Switchboard(URL, {
    token: token('alice', { ttl: -30 }), // expired (past the server's leeway) before connecting
    getToken: async () => {
      calls++;
      return token('alice');
    },
    minReconnectDelay: 50,
  });
  t.after(() => alice.close());
  const errors = [];
  alice.on('error', (err) => errors.push(err.code));
  const [info] = await next(alice, 'disconnected');
  assert.equal(info.code, CloseCode.TOKEN_EXPIRED);
  assert.equal(info.reconnect, true);
  await next(alice, 'connected');
  assert.equal(calls, 1);
  assert.deepEqual(errors, [ErrorCode.TOKEN_EXPIRED]);
  await alice.ping();
});

test('an operator disconnect (4504) is terminal: the client stops reconnecting', async (t) => {
  const mallory = client(t, 'mallory');
  await mallory.ready();
  const states = [];
  mallory.on('state', ({ state }) => states.push(state));
  const closed = next(mallory, 'disconnected');
  await api('POST', '/api/disconnect', { user: 'mallory' });
  const [info] = await closed;
  assert.equal(info.code, CloseCode.DISCONNECTED);
  assert.equal(info.reconnect, false);
  await sleep(300); // several reconnect delays (50-500 ms): none may start
  assert.deepEqual(states, ['closed']);
  assert.equal((await rejection(mallory.ping())).code, ErrorCode.CLOSED);
  const presence = await api('GET', `/api/presence?channel=${unique('chat:x')}`);
  assert.deepEqual(presence.clients, {});
});

test('a forged token is refused for good (101, close 4500)', async (t) => {
  const eve = client(t, 'eve', { token: `${token('eve')}x` });
  const errors = [];
  eve.on('error', (err) => errors.push(err));
  const [info] = await next(eve, 'disconnected');
  assert.equal(info.code, CloseCode.INVALID_TOKEN);
  assert.equal(eve.state, 'closed');
  assert.equal(errors[0].code, ErrorCode.UNAUTHORIZED);
});

test('a connect refused without a close (107: name too long) ends the client', async (t) => {
  const alice = client(t, 'alice', { name: 'x'.repeat(200) });
  const errors = [];
  alice.on('error', (err) => errors.push(err.code));
  const [info] = await next(alice, 'disconnected', 3000);
  assert.equal(info.reconnect, false);
  assert.equal(alice.state, 'closed');
  assert.deepEqual(errors, [ErrorCode.BAD_REQUEST]);
});
