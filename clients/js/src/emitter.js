/** A minimal event emitter (browsers and Node alike): `on` returns a function that removes it. */
export class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return () => this.off(event, handler);
  }

  once(event, handler) {
    const off = this.on(event, (...args) => {
      off();
      handler(...args);
    });
    return off;
  }

  off(event, handler) {
    this._handlers.get(event)?.delete(handler);
  }

  emit(event, ...args) {
    for (const handler of [...(this._handlers.get(event) ?? [])]) {
      try {
        handler(...args);
      } catch (err) {
        // One faulty handler must not stop the others, nor the client.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  _emit(event, ...args) {
    this.emit(event, ...args);
  }
}
