/**
 * The Switchboard client: one WebSocket to the gateway's native protocol (docs/protocol.md),
 * kept open across network drops, token expiry and gateway restarts.
 *
 * What survives a reconnect: subscriptions (re-subscribed with `since`, so the publications
 * missed meanwhile are delivered in order and once), rooms (joined again), the token (refreshed
 * through `getToken`). Commands in flight when the socket closed fail with CONNECTION_LOST;
 * commands sent while disconnected wait for the next connection (within their timeout).
 */
import { CloseCode, ErrorCode, SwitchboardError, isTerminalClose } from './errors.js';
import { Emitter } from './emitter.js';
import { Room } from './room.js';
import { Subscription } from './subscription.js';

const DEFAULTS = Object.freeze({
  name: '',
  timeout: 10_000, // ms a command may wait for its reply (and for a connection)
  rpcTimeout: 30_000,
  minReconnectDelay: 250,
  maxReconnectDelay: 20_000,
  WebSocket: undefined,
});

/** The WebSocket constructor: the one given, the global one, else the `ws` package (Node). */
async function resolveWebSocket(given) {
  if (given) return given;
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  const name = 'ws'; // a variable: bundlers for the browser must not try to resolve it
  try {
    const mod = await import(/* webpackIgnore: true */ /* @vite-ignore */ name);
    return mod.WebSocket ?? mod.default;
  } catch {
    throw new SwitchboardError(
      ErrorCode.CLOSED,
      'no WebSocket here: install the `ws` package or pass {WebSocket} in the options',
    );
  }
}

const OPEN = 1;

export class Switchboard extends Emitter {
  /**
   * @param {string} url the gateway's `ws://host/ws` (or `wss://`)
   * @param {object} options `token` or `getToken: () => Promise<string>` (or both: `token` is
   *   used first), `name`, `timeout`, `rpcTimeout`, `minReconnectDelay`, `maxReconnectDelay`
   *   (ms), `WebSocket` (a constructor), `autoConnect` (true)
   */
  constructor(url, options = {}) {
    super();
    if (!options.token && typeof options.getToken !== 'function') {
      throw new TypeError('Switchboard needs a token or a getToken function');
    }
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.state = 'disconnected'; // connecting | connected | disconnected | closed
    this.client = null; // this connection's id, from the connect reply
    this.user = null;
    this._token = options.token ?? null;
    this._tokenExpiresAt = null; // ms timestamp, when known
    this._ws = null;
    this._pending = new Map(); // id -> {resolve, reject, timer}
    this._nextId = 0;
    this._waiters = new Set(); // commands waiting for a connection
    this._subs = new Map();
    this._rooms = new Map();
    this._attempt = 0;
    this._timers = { reconnect: null, refresh: null, alive: null, open: null };
    this._lastReceived = 0;
    this._closeInfo = null; // the `disconnect` push of the current socket
    this._generation = 0;
    if (options.autoConnect !== false) queueMicrotask(() => this.connect());
  }

  // -- connection -------------------------------------------------------------------------

  /** Open the connection (done by the constructor unless `autoConnect: false`). */
  connect() {
    if (this.state === 'connecting' || this.state === 'connected') return;
    if (this.state === 'closed') this._attempt = 0;
    this._open();
  }

  /** Close for good: no reconnect; pending commands fail with CLOSED. */
  close() {
    this._generation++;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    this._setState('closed');
    const err = new SwitchboardError(ErrorCode.CLOSED, 'client closed');
    this._failPending(err);
    this._failWaiters(err);
    if (ws) {
      detach(ws);
      try {
        ws.close(CloseCode.NORMAL, 'client closed');
      } catch {
        // already closed
      }
    }
  }

  /** Resolves once connected (at once if already), rejects if the client is closed meanwhile. */
  ready(timeout = this.options.timeout) {
    return this._waitConnected(timeout);
  }

  async _open() {
    const generation = ++this._generation;
    this._clearTimers();
    this._setState('connecting');
    let token;
    let WebSocketImpl;
    try {
      token = await this._currentToken();
      WebSocketImpl = await resolveWebSocket(this.options.WebSocket);
    } catch (err) {
      if (generation !== this._generation) return;
      const error = asError(err, 'getToken failed');
      this.emit('error', error);
      if (error.code === ErrorCode.CLOSED) return this._terminate(error);
      return this._scheduleReconnect();
    }
    if (generation !== this._generation) return;
    let ws;
    try {
      ws = new WebSocketImpl(this.url);
    } catch (err) {
      this.emit('error', asError(err, 'could not open the WebSocket'));
      return this._scheduleReconnect();
    }
    this._ws = ws;
    this._closeInfo = null;
    ws.onopen = () => this._onOpen(ws, token);
    ws.onmessage = (event) => this._onMessage(ws, event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // a close event follows
    // A handshake that hangs (a black-holed address) is given up after `timeout`.
    this._timers.open = setTimeout(() => {
      if (ws === this._ws && this.state === 'connecting') this._drop(ws, 1006, 'connect timeout');
    }, this.options.timeout);
  }

  async _currentToken() {
    const margin = 1000;
    const stale = this._tokenExpiresAt !== null && Date.now() > this._tokenExpiresAt - margin;
    if ((this._token === null || stale) && this.options.getToken) {
      const token = await this.options.getToken();
      if (typeof token !== 'string' || !token) {
        throw new SwitchboardError(ErrorCode.CLOSED, 'getToken gave no token');
      }
      this._token = token;
      this._tokenExpiresAt = null;
    }
    return this._token;
  }

  async _onOpen(ws, token) {
    let result;
    try {
      result = await this._send(ws, { op: 'connect', token, name: this.options.name || undefined });
    } catch (err) {
      if (ws !== this._ws) return;
      this.emit('error', err);
      if (err.code === ErrorCode.TOKEN_EXPIRED && this.options.getToken) this._token = null;
      // The server closes the socket after the refusals that end it (its close code then
      // decides what comes next); after others (Redis unreachable: 108, a bad `name`: 107)
      // it keeps it open: drop it, to retry later if the error is temporary.
      setTimeout(() => {
        if (ws !== this._ws) return;
        this._closeInfo = { code: CloseCode.NORMAL, reason: err.message, reconnect: err.temporary };
        this._drop(ws, CloseCode.NORMAL, err.message);
      }, 1000);
      return;
    }
    if (ws !== this._ws) return;
    this.client = result.client;
    this.user = result.user;
    this._setTokenExpiry(result.expires_in);
    this._setState('connected');
    this._startAliveCheck(ws, result.ping);
    this.emit('connected', { client: result.client, user: result.user });
    for (const waiter of [...this._waiters]) waiter.resolve();
    const restored = await this._restore(ws);
    if (restored && ws === this._ws) this._attempt = 0;
  }

  /** Subscribe every channel again (with `since`) and join every room again. */
  async _restore(ws) {
    const jobs = [];
    for (const sub of this._subs.values()) jobs.push(this._subscribeOn(ws, sub));
    for (const room of this._rooms.values()) if (room._joined) jobs.push(this._rejoin(ws, room));
    const results = await Promise.allSettled(jobs);
    return results.every((r) => r.status === 'fulfilled');
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    detach(ws);
    this._ws = null;
    this._clearTimers();
    const info = this._closeInfo;
    code = code || info?.code || 1006;
    reason = reason || info?.reason || '';
    this._failPending(new SwitchboardError(ErrorCode.CONNECTION_LOST, `connection lost (${code})`));
    for (const sub of this._subs.values()) sub._subscribed = false;
    const wasConnected = this.state === 'connected';
    let reconnect = !isTerminalClose(code) && info?.reconnect !== false;
    if (code === CloseCode.TOKEN_EXPIRED) {
      // Without getToken nobody can give a fresh token: reconnecting would loop on 4001.
      if (this.options.getToken) this._token = null;
      else reconnect = false;
    }
    this.client = null;
    this.emit('disconnected', { code, reason, reconnect, wasConnected });
    if (!reconnect) {
      this._terminate(new SwitchboardError(ErrorCode.CLOSED, reason || `closed (${code})`, { closeCode: code }));
      return;
    }
    this._scheduleReconnect();
  }

  _terminate(err) {
    this._generation++;
    this._clearTimers();
    this._setState('closed');
    this._failWaiters(err);
    this._failPending(err);
  }

  _scheduleReconnect() {
    this._setState('disconnected');
    const { minReconnectDelay, maxReconnectDelay } = this.options;
    const ceiling = Math.min(maxReconnectDelay, minReconnectDelay * 2 ** this._attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
    this._attempt++;
    const generation = this._generation;
    this._timers.reconnect = setTimeout(() => {
      if (generation === this._generation && this.state === 'disconnected') this._open();
    }, delay);
    this.emit('reconnecting', { attempt: this._attempt, delay });
  }

  _setState(state) {
    if (this.state === state) return;
    const previous = this.state;
    this.state = state;
    this.emit('state', { state, previous });
  }

  _clearTimers() {
    clearTimeout(this._timers.reconnect);
    clearTimeout(this._timers.refresh);
    clearInterval(this._timers.alive);
    clearTimeout(this._timers.open);
    this._timers = { reconnect: null, refresh: null, alive: null, open: null };
  }

  /** Drop a socket that stopped answering without waiting for TCP to notice. */
  _drop(ws, code, reason) {
    try {
      ws.close(CloseCode.NORMAL, reason);
    } catch {
      // closing anyway
    }
    this._onClose(ws, code, reason);
  }

  _startAliveCheck(ws, pingSeconds) {
    const interval = Math.max(1, Number(pingSeconds) || 25) * 1000;
    this._timers.alive = setInterval(() => {
      if (ws !== this._ws || Date.now() - this._lastReceived < interval) return;
      // Server pings are invisible to a browser: ask for a reply ourselves.
      this._send(ws, { op: 'ping' }, interval).catch((err) => {
        if (err.code === ErrorCode.TIMEOUT && ws === this._ws) this._drop(ws, 4006, 'no reply to ping');
      });
    }, interval);
  }

  // -- token refresh ----------------------------------------------------------------------

  _setTokenExpiry(expiresIn) {
    clearTimeout(this._timers.refresh);
    if (expiresIn === null || expiresIn === undefined) {
      this._tokenExpiresAt = null;
      return;
    }
    const ttl = Number(expiresIn) * 1000;
    this._tokenExpiresAt = Date.now() + ttl;
    if (!this.options.getToken) return;
    // Well before expiry: a quarter of the lifetime early, at most a minute.
    this._scheduleRefresh(Math.max(0, ttl - Math.min(60_000, ttl / 4)));
  }

  _scheduleRefresh(delay) {
    const ws = this._ws;
    this._timers.refresh = setTimeout(() => this._refresh(ws), delay);
  }

  async _refresh(ws) {
    if (ws !== this._ws || this.state !== 'connected') return;
    try {
      const token = await this.options.getToken();
      if (ws !== this._ws) return;
      const result = await this._send(ws, { op: 'refresh', token });
      this._token = token;
      this._setTokenExpiry(result.expires_in);
      this.emit('refreshed', { expiresIn: result.expires_in });
    } catch (err) {
      if (ws !== this._ws) return;
      this.emit('error', asError(err, 'token refresh failed'));
      const left = (this._tokenExpiresAt ?? Date.now()) - Date.now();
      if (left > 0) this._scheduleRefresh(Math.min(5_000, Math.max(250, left / 3)));
      // else the server closes with 4001 and the reconnect fetches a token
    }
  }

  // -- wire -------------------------------------------------------------------------------

  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    this._lastReceived = Date.now();
    if (typeof data !== 'string') return; // the gateway sends text only
    for (const line of data.split('\n')) {
      if (!line.trim()) continue;
      let msg;
      try {
        msg = JSON.parse(line);
      } catch {
        this.emit('error', new SwitchboardError(ErrorCode.BAD_REQUEST, 'server sent bad JSON'));
        continue;
      }
      if (msg.push) this._onPush(msg);
      else this._onReply(msg);
    }
  }

  _onReply(msg) {
    const pending = msg.id === undefined ? undefined : this._pending.get(msg.id);
    if (!pending) {
      if (msg.error) this.emit('error', SwitchboardError.fromReply(msg.error));
      return;
    }
    this._pending.delete(msg.id);
    clearTimeout(pending.timer);
    if (msg.error) pending.reject(SwitchboardError.fromReply(msg.error));
    else pending.resolve(msg.result);
  }

  _onPush(msg) {
    switch (msg.push) {
      case 'pub': {
        const sub = this._subs.get(msg.channel);
        if (sub && sub._subscribed) sub._deliver(msg);
        break;
      }
      case 'join':
      case 'leave': {
        const sub = this._subs.get(msg.channel);
        if (sub) sub.emit(msg.push, msg.info);
        break;
      }
      case 'room': {
        const room = this._rooms.get(msg.room);
        if (room) this._onRoomPush(room, msg);
        break;
      }
      case 'disconnect':
        this._closeInfo = { code: msg.code, reason: msg.reason, reconnect: msg.reconnect };
        break;
      default:
        break;
    }
  }

  /** Send one command on `ws` and wait for its reply. */
  _send(ws, command, timeout = this.options.timeout) {
    return new Promise((resolve, reject) => {
      if (!ws || ws !== this._ws || ws.readyState !== OPEN) {
        reject(new SwitchboardError(ErrorCode.CONNECTION_LOST, 'not connected'));
        return;
      }
      const id = ++this._nextId;
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SwitchboardError(ErrorCode.TIMEOUT, `no reply to ${command.op} in ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ id, ...command }));
    });
  }

  /** A command from the app: waits for a connection first (within the same timeout). */
  async _call(op, fields, timeout = this.options.timeout) {
    const started = Date.now();
    if (this.state !== 'connected') await this._waitConnected(timeout);
    const left = Math.max(1, timeout - (Date.now() - started));
    return this._send(this._ws, { op, ...fields }, left);
  }

  _waitConnected(timeout) {
    if (this.state === 'connected') return Promise.resolve();
    if (this.state === 'closed') {
      return Promise.reject(new SwitchboardError(ErrorCode.CLOSED, 'client closed'));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => done(resolve),
        reject: (err) => done(() => reject(err)),
      };
      const timer = setTimeout(
        () => waiter.reject(new SwitchboardError(ErrorCode.TIMEOUT, `not connected within ${timeout} ms`)),
        timeout,
      );
      const done = (fn) => {
        clearTimeout(timer);
        this._waiters.delete(waiter);
        fn();
      };
      this._waiters.add(waiter);
    });
  }

  _failPending(err) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  _failWaiters(err) {
    for (const waiter of [...this._waiters]) waiter.reject(err);
  }

  // -- channels ---------------------------------------------------------------------------

  /**
   * Subscribe to a channel; resolves with the Subscription once the server accepted it.
   * handlers: `onPublication({channel, offset, data, event})`, `onJoin(info)`, `onLeave(info)`,
   * `onSubscribed({recovered, resubscribed, epoch, offset})`, `onRecoveryFailed(ctx)` (a
   * reconnect could not fill the gap: reload the state from its source), `onError(err)`.
   * options: `since: {offset, epoch}` (resume from a position kept by the app), `token` (a
   * channel token).
   */
  async subscribe(channel, handlers = {}, options = {}) {
    if (this._subs.has(channel)) {
      throw new SwitchboardError(ErrorCode.ALREADY_SUBSCRIBED, `already subscribed to ${channel}`);
    }
    const sub = new Subscription(this, channel, handlers, options);
    this._subs.set(channel, sub);
    if (this.state === 'connected') this._subscribeOn(this._ws, sub).catch(() => {});
    else {
      this._waitConnected(this.options.timeout).catch((err) => {
        if (this._subs.get(channel) === sub) this._subs.delete(channel);
        sub._fail(err);
      });
    }
    return sub._ready;
  }

  async _subscribeOn(ws, sub) {
    if (sub._inFlight === ws) return;
    sub._inFlight = ws;
    const fields = { channel: sub.channel };
    if (sub.token) fields.token = sub.token;
    const since = sub.position();
    if (since) fields.since = since;
    let result;
    try {
      result = await this._send(ws, { op: 'subscribe', ...fields });
    } catch (err) {
      if (sub._inFlight === ws) sub._inFlight = null;
      if (this._subs.get(sub.channel) !== sub || ws !== this._ws) return;
      if (err.temporary || err.code === ErrorCode.TIMEOUT) {
        // Redis was unreachable a moment: try again on this connection.
        setTimeout(() => {
          if (ws === this._ws && this._subs.get(sub.channel) === sub) this._subscribeOn(ws, sub);
        }, 500);
        return;
      }
      this._subs.delete(sub.channel);
      sub._fail(err);
      this.emit('error', err);
      throw err;
    }
    sub._inFlight = null;
    if (ws !== this._ws) return;
    if (this._subs.get(sub.channel) !== sub) {
      // Unsubscribed while the subscribe was in flight: the server has it now, undo it.
      this._send(ws, { op: 'unsubscribe', channel: sub.channel }).catch(() => {});
      return;
    }
    sub._onSubscribed(result, Boolean(since));
  }

  /** Stop receiving a channel's publications. */
  async unsubscribe(channel) {
    const sub = this._subs.get(channel);
    if (!sub) return;
    this._subs.delete(channel);
    const live = sub._subscribed;
    sub._fail(new SwitchboardError(ErrorCode.NOT_SUBSCRIBED, 'unsubscribed'));
    if (this.state !== 'connected' || !live) return;
    try {
      await this._send(this._ws, { op: 'unsubscribe', channel });
    } catch (err) {
      if (err.code !== ErrorCode.NOT_SUBSCRIBED && err.code !== ErrorCode.CONNECTION_LOST) throw err;
    }
  }

  /** The Subscription of a channel, if subscribed. */
  getSubscription(channel) {
    return this._subs.get(channel);
  }

  /**
   * Publish (namespaces with `allow_publish`); resolves with `{offset, epoch}`. options:
   * `event` (a name; where the namespace has `events`, the handlers service receives it too).
   */
  publish(channel, data, options = {}) {
    const fields = { channel, data };
    if (options.event !== undefined) fields.event = options.event;
    return this._call('publish', fields);
  }

  /** `{publications, offset, epoch}`; options `since: {offset, epoch}`, `limit`. */
  history(channel, options = {}) {
    const fields = { channel };
    if (options.since) fields.since = options.since;
    if (options.limit !== undefined) fields.limit = options.limit;
    return this._call('history', fields);
  }

  /** `{client id: {user, client, name?, info?}}` of the channel's subscribers. */
  async presence(channel) {
    return (await this._call('presence', { channel })).clients;
  }

  /** Call a server-side method (the handlers service); resolves with its result. */
  rpc(method, data = null, options = {}) {
    const fields = { method, data };
    if (options.room !== undefined) fields.room = options.room;
    return this._call('rpc', fields, options.timeout ?? this.options.rpcTimeout);
  }

  /** Ask the server for a reply (a liveness check). */
  async ping() {
    await this._call('ping', {});
  }

  // -- rooms ------------------------------------------------------------------------------

  /**
   * Join a room; resolves with its Room (`room`, `version`, `state`, `people`), kept up to date
   * by the room's pushes and joined again after a reconnect.
   * options: `state` (the initial state if the join creates the room), `onRoom(room, change)`.
   */
  async joinRoom(roomId, options = {}) {
    if (this._rooms.has(roomId)) {
      throw new SwitchboardError(ErrorCode.ALREADY_SUBSCRIBED, `already in room ${roomId}`);
    }
    const room = new Room(roomId);
    if (options.onRoom) room.on('change', options.onRoom);
    this._rooms.set(roomId, room);
    const fields = { room: roomId };
    if (options.state !== undefined) fields.state = options.state;
    try {
      const snapshot = await this._call('room.join', fields);
      room._joined = true;
      this._applySnapshot(room, snapshot, 'join');
    } catch (err) {
      if (this._rooms.get(roomId) === room) this._rooms.delete(roomId);
      throw err;
    }
    return room;
  }

  async _rejoin(ws, room) {
    room.version = null; // the room may have been recreated: its versions start over
    const fields = { room: room.room };
    if (room.state !== null && room.state !== undefined) fields.state = room.state;
    try {
      const snapshot = await this._send(ws, { op: 'room.join', ...fields });
      this._applySnapshot(room, snapshot, 'rejoin');
    } catch (err) {
      if (ws !== this._ws || this._rooms.get(room.room) !== room) return;
      if (err.code === ErrorCode.ALREADY_SUBSCRIBED) {
        // Already a member on this socket: read the room instead.
        const snapshot = await this._send(ws, { op: 'room.get', room: room.room });
        this._applySnapshot(room, snapshot, 'rejoin');
        return;
      }
      this._rooms.delete(room.room);
      room._emit('error', err);
      this.emit('error', err);
      throw err;
    }
  }

  /** Leave a room; resolves with its snapshot after leaving. */
  async leaveRoom(roomId) {
    const room = this._rooms.get(roomId);
    this._rooms.delete(roomId);
    if (room) room._joined = false;
    try {
      return await this._call('room.leave', { room: roomId });
    } catch (err) {
      if (err.code === ErrorCode.NOT_SUBSCRIBED && room) return room.snapshot();
      throw err;
    }
  }

  /** A room's snapshot, joined or not (version 0 and `{}` if it does not exist). */
  getRoom(roomId) {
    return this._call('room.get', { room: roomId });
  }

  /** The Room object of a joined room. */
  room(roomId) {
    return this._rooms.get(roomId);
  }

  /**
   * Merge `patch` into the room's state (JSON merge patch: `null` deletes a key).
   * `patch` may be a function `(state) => patch`, called again with the current state after a
   * conflict. options: `version` (a number, or `true` for the version this client has: the
   * update then applies only if nobody changed the room meanwhile, else 113 conflict),
   * `retries` (how many times to retry a conflict against the newer version; 0: throw it).
   */
  async updateRoom(roomId, patch, options = {}) {
    const retries = options.retries ?? 0;
    let version = options.version === true ? this._rooms.get(roomId)?.version : options.version;
    for (let attempt = 0; ; attempt++) {
      const room = this._rooms.get(roomId);
      const body = typeof patch === 'function' ? patch(structuredClone(room?.state ?? {})) : patch;
      const fields = { room: roomId, patch: body };
      if (version !== undefined && version !== null) fields.version = version;
      try {
        const snapshot = await this._call('room.update', fields);
        if (room) this._applySnapshot(room, snapshot, 'update');
        return room ?? snapshot;
      } catch (err) {
        if (err.code !== ErrorCode.CONFLICT || attempt >= retries) throw err;
        if (room) {
          this._applySnapshot(room, { ...room.snapshot(), version: err.version, state: err.state }, 'conflict');
        }
        version = err.version;
      }
    }
  }

  /** `handler(room, change)` for every change of every joined room; returns an unsubscriber. */
  onRoom(handler) {
    return this.on('room', handler);
  }

  _applySnapshot(room, snapshot, cause) {
    if (room.version !== null && snapshot.version < room.version) return;
    const changed = room.version !== snapshot.version;
    room._replace(snapshot.version, snapshot.state, snapshot.people);
    if (changed || cause === 'rejoin' || cause === 'join') this._roomChanged(room, { cause, state: room.state });
  }

  _onRoomPush(room, push) {
    if (push.deleted) {
      this._rooms.delete(room.room);
      room._joined = false;
      room._replace(push.version, null, push.people ?? []);
      room.deleted = true;
      this._roomChanged(room, { cause: 'deleted', deleted: true });
      return;
    }
    if (push.state !== undefined) {
      if (room.version === null || push.version > room.version) {
        room._replace(push.version, push.state, push.people);
        this._roomChanged(room, { cause: 'push', state: push.state });
      }
      return;
    }
    if (room.version === null || push.version <= room.version) return; // older, or before the join reply
    if (push.version === room.version + 1) {
      room._merge(push.version, push.patch, push.people);
      this._roomChanged(room, { cause: 'push', patch: push.patch });
      return;
    }
    // A gap: read the whole room.
    const ws = this._ws;
    this._send(ws, { op: 'room.get', room: room.room })
      .then((snapshot) => this._applySnapshot(room, snapshot, 'gap'))
      .catch((err) => this.emit('error', err));
  }

  _roomChanged(room, change) {
    room._emit('change', room, change);
    this.emit('room', room, change);
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  ws.onerror = () => {};
}

function asError(err, message) {
  if (err instanceof SwitchboardError) return err;
  return new SwitchboardError(ErrorCode.CONNECTION_LOST, `${message}: ${err?.message ?? err}`);
}
