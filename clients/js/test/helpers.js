// Helpers for the tests against a live gateway (started by tests/clients/test_js_client.py).
import { createHmac, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { Switchboard } from '../src/index.js';

export const URL = process.env.SB_URL;
export const API = process.env.SB_API;
const SECRET = process.env.SB_SECRET;
const CONTROL = process.env.SB_CONTROL;

if (!URL || !API || !SECRET) {
  throw new Error('run through tests/clients/test_js_client.py: SB_URL, SB_API, SB_SECRET unset');
}

const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

/** An HS256 JWT signed with the gateway's key. */
export function token(sub, { ttl = 3600, ...claims } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = { sub, iat: now, ...claims };
  if (ttl !== null) payload.exp = now + ttl;
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}`;
  const signature = createHmac('sha256', SECRET).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

/** A unique name, so that tests never share a channel or a room. */
export function unique(prefix) {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** A client with quick reconnects, closed by `t.after`. */
export function client(t, user = 'alice', options = {}) {
  const sb = new Switchboard(URL, {
    token: token(user),
    minReconnectDelay: 50,
    maxReconnectDelay: 500,
    timeout: 5000,
    ...options,
  });
  t.after(() => sb.close());
  return sb;
}

/** The server API of the second gateway. */
export async function api(method, path, body) {
  const resp = await fetch(`${API}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${token('backend', { scope: 'admin' })}`,
      'Content-Type': 'application/json',
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await resp.json();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${JSON.stringify(json)}`);
  return json;
}

export const publishViaApi = (channel, data) => api('POST', '/api/publish', { channel, data });

/** Kill (SIGKILL) or start the clients' gateway, through the test's control endpoint. */
export async function gateway(action) {
  const resp = await fetch(`${CONTROL}/gateway/${action}`, { method: 'POST' });
  if (!resp.ok) throw new Error(`gateway ${action}: ${resp.status} ${await resp.text()}`);
}

/** Poll `predicate` until true; throw `what` after `timeout` ms. */
export async function waitFor(predicate, what, timeout = 5000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with the first `event` the emitter emits (its arguments as an array). */
export function next(emitter, event, timeout = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeout} ms`)), timeout);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

/** Rejection of `promise` as the error, failing if it resolves. */
export async function rejection(promise) {
  let value;
  try {
    value = await promise;
  } catch (err) {
    return err;
  }
  throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
}
