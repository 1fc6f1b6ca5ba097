/**
 * The demo page: a review room (people, a shared playhead, annotations), a channel's events and
 * a camera stream, on the JavaScript client of clients/js (served by the gateway under
 * /demo/client/). Query parameters: name (join at once), room, channel, camera (`label/key` of
 * the frames API), streams (the streams service's origin when it is not behind the same address
 * as the gateway).
 *
 * The room's state: {playback: {position, playing, by}, strokes: {id: {by, color, points}}}.
 * Every change is a JSON merge patch of the keys it touches, so two people drawing at once add
 * two strokes: neither overwrites the other.
 */
import { Switchboard, compareOffsets } from '/demo/client/index.js';

const params = new URLSearchParams(location.search);
const ROOM = params.get('room') || 'demo';
const CHANNEL = params.get('channel') || 'demo:feed';
const [LABEL, KEY = 'cam'] = (params.get('camera') || 'demo/cam').split('/');
const STREAMS = (params.get('streams') || location.origin).replace(/\/+$/, '');
const DURATION = 120; // seconds of the pretend clip
const USER_PREFIX = 'demo:'; // what the gateway puts before a visitor's name
const MAX_EVENTS = 50;
const MAX_POINTS = 400;
const CAMERA_RETRY_MS = 1000;

const $ = (id) => document.getElementById(id);
const displayName = (user) => (user.startsWith(USER_PREFIX) ? user.slice(USER_PREFIX.length) : user);
const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;

const session = { name: '', user: '', token: '', sb: null, room: null };

// -- joining -------------------------------------------------------------------------------

async function fetchToken(name) {
  const response = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error?.message ?? `HTTP ${response.status}`);
  // haproxy (the local cluster) names the replica; without it, the gateway's own id.
  const servedBy = response.headers.get('X-Served-By');
  $('gateway').textContent = servedBy ? `served by ${servedBy}` : `gateway ${body.gateway}`;
  $('gateway').dataset.gateway = servedBy || body.gateway;
  session.token = body.token;
  return body;
}

async function join(name) {
  const first = await fetchToken(name);
  session.name = name;
  session.user = first.user;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const sb = new Switchboard(`${scheme}://${location.host}/ws`, {
    token: first.token,
    getToken: async () => (await fetchToken(name)).token,
    name,
  });
  session.sb = sb;
  sb.on('state', ({ state }) => {
    $('status').dataset.state = state;
    $('state').textContent = state;
  });
  $('who').textContent = `you are ${name}`;
  $('room-name').textContent = ROOM;
  $('channel-name').textContent = CHANNEL;
  $('stream-name').textContent = `${LABEL}/${KEY}`;
  $('join').hidden = true;
  $('demo').hidden = false;
  await Promise.all([joinRoom(sb), followChannel(sb)]);
  watchCamera();
}

$('join').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('name').value.trim();
  $('join-error').textContent = '';
  join(name).catch((err) => {
    $('join-error').textContent = err.message;
  });
});

// -- the review room -----------------------------------------------------------------------

const playhead = { position: 0, playing: false, since: performance.now(), key: '' };
let dragging = false;
let drawing = null; // the stroke under the pointer: {color, points}

async function joinRoom(sb) {
  session.room = await sb.joinRoom(ROOM, {
    state: { playback: { position: 0, playing: false }, strokes: {} },
    onRoom: (room) => renderRoom(room),
  });
  renderRoom(session.room);
  requestAnimationFrame(tick);
}

function renderRoom(room) {
  const people = $('people');
  people.replaceChildren(
    ...room.people.map((user) => {
      const li = document.createElement('li');
      li.textContent = displayName(user);
      if (user === session.user) li.className = 'me';
      return li;
    }),
  );
  const playback = room.state?.playback ?? { position: 0, playing: false };
  const key = JSON.stringify(playback);
  if (key !== playhead.key) {
    // Anchored at the moment this page learned of it: clocks of two machines never agree.
    Object.assign(playhead, {
      key,
      position: Number(playback.position) || 0,
      playing: Boolean(playback.playing),
      since: performance.now(),
    });
    $('play').textContent = playhead.playing ? 'Pause' : 'Play';
    $('play').dataset.playing = String(playhead.playing);
    showPosition(); // at once, not at the next frame: the page shows one state at a time
  }
  drawStrokes(room.state?.strokes ?? {});
}

function currentPosition() {
  if (!playhead.playing) return playhead.position;
  return Math.min(DURATION, playhead.position + (performance.now() - playhead.since) / 1000);
}

function showPosition() {
  const position = currentPosition();
  if (!dragging) $('position').value = String(position);
  const shown = dragging ? Number($('position').value) : position;
  $('position-text').textContent = `${clock(shown)} / ${clock(DURATION)}`;
  $('clock').textContent = clock(shown);
}

function tick() {
  showPosition();
  requestAnimationFrame(tick);
}

function setPlayback(position, playing) {
  const playback = { position: Math.round(position * 1000) / 1000, playing, by: session.user };
  return session.sb.updateRoom(ROOM, { playback }).catch(showRoomError);
}

$('play').addEventListener('click', () => setPlayback(currentPosition(), !playhead.playing));
$('position').addEventListener('input', () => {
  dragging = true;
});
$('position').addEventListener('change', async () => {
  const position = Number($('position').value);
  await setPlayback(position, playhead.playing);
  dragging = false;
});
$('clear').addEventListener('click', () => {
  session.sb.updateRoom(ROOM, { strokes: null }).catch(showRoomError);
});

function showRoomError(err) {
  $('publish-error').textContent = `room: ${err.message}`;
}

// -- annotations ---------------------------------------------------------------------------

const canvas = $('canvas');
const ctx = canvas.getContext('2d');

function pointOf(event) {
  const box = canvas.getBoundingClientRect();
  const x = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
  const y = Math.min(1, Math.max(0, (event.clientY - box.top) / box.height));
  return [Math.round(x * 1000) / 1000, Math.round(y * 1000) / 1000];
}

function strokePath(stroke) {
  const points = stroke.points ?? [];
  if (points.length === 0) return;
  ctx.strokeStyle = stroke.color ?? '#ff3b30';
  ctx.fillStyle = ctx.strokeStyle;
  ctx.lineWidth = 4;
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.beginPath();
  ctx.moveTo(points[0][0] * canvas.width, points[0][1] * canvas.height);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x * canvas.width, y * canvas.height);
  if (points.length === 1) ctx.lineTo(points[0][0] * canvas.width + 0.1, points[0][1] * canvas.height);
  ctx.stroke();
}

function drawStrokes(strokes) {
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const all = Object.values(strokes);
  for (const stroke of all) strokePath(stroke);
  if (drawing) strokePath(drawing);
  canvas.dataset.strokes = String(all.length);
}

canvas.addEventListener('pointerdown', (event) => {
  if (!session.room) return;
  canvas.setPointerCapture(event.pointerId);
  drawing = { color: $('color').value, points: [pointOf(event)] };
});
canvas.addEventListener('pointermove', (event) => {
  if (!drawing || drawing.points.length >= MAX_POINTS) return;
  drawing.points.push(pointOf(event));
  drawStrokes(session.room.state?.strokes ?? {});
});
canvas.addEventListener('pointerup', () => {
  if (!drawing) return;
  const stroke = { ...drawing, by: session.user };
  drawing = null;
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  session.sb.updateRoom(ROOM, { strokes: { [id]: stroke } }).catch(showRoomError);
});

// -- the events feed -----------------------------------------------------------------------

const events = new Map(); // offset -> publication

async function followChannel(sb) {
  await sb.subscribe(CHANNEL, {
    onPublication: (pub) => addEvents([pub]),
    onRecoveryFailed: () => loadHistory(sb),
  });
  await loadHistory(sb);
}

async function loadHistory(sb) {
  const { publications } = await sb.history(CHANNEL, { limit: 20 });
  addEvents(publications.map((pub) => ({ ...pub, channel: CHANNEL })));
}

function addEvents(publications) {
  for (const pub of publications) events.set(pub.offset, pub);
  const newest = [...events.values()].sort((a, b) => compareOffsets(b.offset, a.offset));
  for (const old of newest.slice(MAX_EVENTS)) events.delete(old.offset);
  $('events').replaceChildren(...newest.slice(0, MAX_EVENTS).map(eventItem));
}

function eventItem(pub) {
  const li = document.createElement('li');
  const data = pub.data;
  const from = document.createElement('span');
  from.className = 'from';
  const text = document.createElement('span');
  text.className = 'text';
  if (data && typeof data === 'object' && typeof data.text === 'string') {
    from.textContent = data.name ?? pub.event ?? 'server';
    text.textContent = data.text;
  } else {
    from.textContent = pub.event ?? 'data';
    text.textContent = JSON.stringify(data);
  }
  const offset = document.createElement('span');
  offset.className = 'offset';
  offset.textContent = pub.offset;
  li.append(offset, from, text);
  return li;
}

$('publish').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('message');
  $('publish-error').textContent = '';
  try {
    await session.sb.publish(CHANNEL, { name: session.name, text: input.value });
    input.value = '';
  } catch (err) {
    $('publish-error').textContent = err.message;
  }
});

// -- the camera ----------------------------------------------------------------------------

const DELIMITER = new TextEncoder().encode('--IMG--');
const decoder = new TextDecoder();

/** Split a frames-API message `<JSON header>--IMG--<JPEG>` (the server escapes the delimiter
 * inside the header, so the first one ends it). */
function splitFrame(bytes) {
  outer: for (let i = 0; i + DELIMITER.length <= bytes.length; i++) {
    for (let j = 0; j < DELIMITER.length; j++) if (bytes[i + j] !== DELIMITER[j]) continue outer;
    return { header: JSON.parse(decoder.decode(bytes.subarray(0, i))), image: bytes.subarray(i + DELIMITER.length) };
  }
  throw new Error('no --IMG-- delimiter');
}

/** Pull the camera's frames over the frames API's `/ws/stream/{label}/{key}`: one `pull` at a
 * time, each answered by the newest frame not seen yet (or, after a quiet while, error 114). */
function watchCamera() {
  const img = $('frames');
  const status = $('camera-status');
  let shown = null; // the object URL on screen
  img.onload = () => {
    status.textContent = `live: ${img.naturalWidth}x${img.naturalHeight}`;
  };
  const open = () => {
    const base = STREAMS.replace(/^http/, 'ws');
    const path = `/ws/stream/${encodeURIComponent(LABEL)}/${encodeURIComponent(KEY)}`;
    const ws = new WebSocket(`${base}${path}?${new URLSearchParams({ token: session.token })}`);
    ws.binaryType = 'arraybuffer';
    const pull = () => ws.send(JSON.stringify({ action: 'pull' }));
    ws.onopen = pull;
    ws.onmessage = (event) => {
      if (typeof event.data === 'string') {
        const error = JSON.parse(event.data).error;
        if (error?.code === 114) pull(); // nothing new for a while: ask again
        else if (error) status.textContent = error.message;
        return;
      }
      const { image } = splitFrame(new Uint8Array(event.data));
      const previous = shown;
      shown = URL.createObjectURL(new Blob([image], { type: 'image/jpeg' }));
      img.src = shown;
      if (previous) URL.revokeObjectURL(previous);
      pull();
    };
    ws.onclose = (event) => {
      // No such camera yet (1000 after error 102), a restart (1012), an expired token (4001):
      // look again in a moment, with the newest token.
      if (!shown || event.code !== 1000) status.textContent = `no frames yet from ${LABEL}/${KEY}`;
      setTimeout(open, CAMERA_RETRY_MS);
    };
  };
  open();
}

const preset = params.get('name');
if (preset) {
  $('name').value = preset;
  $('join').requestSubmit();
}
