/**
 * One channel subscription: delivers publications in order and once, across reconnects.
 *
 * The client keeps the offset of the last publication delivered and the epoch of the channel's
 * history; a reconnect subscribes with them as `since`, and the server sends what was missed.
 */
import { Emitter } from './emitter.js';

const HANDLERS = {
  onPublication: 'publication',
  onJoin: 'join',
  onLeave: 'leave',
  onSubscribed: 'subscribed',
  onRecoveryFailed: 'recoveryFailed',
  onError: 'error',
};

/** Compare two stream offsets `<ms>-<seq>`: negative, zero or positive. */
export function compareOffsets(a, b) {
  const [am, as] = a.split('-').map(Number);
  const [bm, bs] = b.split('-').map(Number);
  return am - bm || as - bs;
}

export class Subscription extends Emitter {
  constructor(client, channel, handlers, options) {
    super();
    this.client = client;
    this.channel = channel;
    this.token = options.token;
    this.offset = options.since?.offset ?? null; // of the last publication delivered
    this.epoch = options.since?.epoch ?? null;
    this.recovered = null; // of the last subscribe
    this._subscribed = false;
    this._inFlight = null;
    this._settled = false;
    for (const [key, event] of Object.entries(HANDLERS)) {
      if (typeof handlers[key] === 'function') this.on(event, handlers[key]);
    }
    this._ready = new Promise((resolve, reject) => {
      this._resolve = resolve;
      this._reject = reject;
    });
  }

  /** Where to resume from, if the channel has history and something was received. */
  position() {
    return this.offset && this.epoch ? { offset: this.offset, epoch: this.epoch } : null;
  }

  /** Whether the server is delivering this channel's publications now. */
  get subscribed() {
    return this._subscribed;
  }

  unsubscribe() {
    return this.client.unsubscribe(this.channel);
  }

  _deliver(pub) {
    if (pub.offset) {
      if (this.offset && compareOffsets(pub.offset, this.offset) <= 0) return; // had it already
      this.offset = pub.offset;
    }
    const publication = { channel: this.channel, offset: pub.offset ?? null, data: pub.data };
    if (pub.event !== undefined) publication.event = pub.event;
    this.emit('publication', publication);
  }

  _onSubscribed(result, askedSince) {
    const resubscribed = this._settled;
    if (this.epoch && result.epoch !== this.epoch) this.offset = null; // another history
    this.epoch = result.epoch || null;
    for (const pub of result.publications ?? []) this._deliver(pub);
    if (result.offset && (!this.offset || !result.recovered)) this.offset = result.offset;
    this.recovered = Boolean(result.recovered);
    this._subscribed = true;
    const ctx = {
      channel: this.channel,
      recovered: this.recovered,
      resubscribed,
      epoch: this.epoch,
      offset: this.offset,
    };
    if (!this._settled) {
      this._settled = true;
      this._resolve(this);
    }
    this.emit('subscribed', ctx);
    if ((askedSince || resubscribed) && !this.recovered) {
      this.emit('recoveryFailed', ctx);
      this.client.emit('recoveryFailed', ctx);
    }
  }

  _fail(err) {
    this._subscribed = false;
    if (!this._settled) {
      this._settled = true;
      this._reject(err);
    } else if (err.code !== 110) {
      this.emit('error', err);
    }
  }
}
