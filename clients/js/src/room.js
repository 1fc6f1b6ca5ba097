/**
 * A room joined by this client: its `version`, `state` and `people`, kept current by the
 * room's pushes (a `patch` applies on top of the version before it; a `state` replaces).
 */
import { Emitter } from './emitter.js';

/** RFC 7386 JSON merge patch: objects merge key by key, `null` deletes, anything else replaces. */
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const result =
    target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

export class Room extends Emitter {
  constructor(room) {
    super();
    this.room = room;
    this.version = null;
    this.state = null;
    this.people = [];
    this.deleted = false;
    this._joined = false;
  }

  /** `handler(room, change)` on every change; returns a function that removes it. */
  onChange(handler) {
    return this.on('change', handler);
  }

  snapshot() {
    return { room: this.room, version: this.version, state: this.state, people: this.people };
  }

  _replace(version, state, people) {
    this.version = version;
    this.state = state;
    if (people) this.people = people;
  }

  _merge(version, patch, people) {
    this.version = version;
    this.state = mergePatch(this.state ?? {}, patch);
    if (people) this.people = people;
  }
}
