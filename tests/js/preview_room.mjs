// Kitsu's review room client (src/composables/previewRoom.js, annotationBroadcast.js) with
// socket.io-client 4 on namespace /events: the payloads Kitsu sends, driven from stdin.
// Usage: node preview_room.mjs '{"url": "http://127.0.0.1:5001", "cookie": "<jwt>", "user": "u"}'
// stdin, one command per line: open <playlist>, close, join, leave, update <frame> [playing],
// annotate <add|remove|update> <object id>, panzoom <zoom>, comparison-panzoom <zoom>, quit.
// stdout, one JSON object per line: connect, opened {localId}, event {event, args},
// connect_error, disconnect.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";
import { randomUUID } from "node:crypto";

const options = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const socket = io(`${options.url}/events`, {
  extraHeaders: { Cookie: `access_token_cookie=${options.cookie}` },
  transports: options.transports || ["polling", "websocket"],
  reconnection: false,
});
const room = { id: "", localId: randomUUID(), seq: 0 };
const user_id = options.user;

function state(frame, playing) {
  return {
    user_id,
    playlist_id: room.id,
    is_playing: playing,
    current_entity_id: "entity-1",
    current_entity_index: 0,
    current_preview_file_id: "preview-1",
    current_preview_file_index: 0,
    current_frame: frame,
    is_repeating: false,
    is_laser_mode: false,
    is_annotations_displayed: true,
    is_waveform_displayed: false,
    is_zoom_enabled: false,
    handle_in: null,
    handle_out: null,
    speed: 3,
    comparing: {
      enable: false,
      task_type: null,
      revision: null,
      mode: "sidebyside",
      comparison_preview_index: 0,
    },
  };
}

socket.on("connect", () => out({ type: "connect", localId: room.localId }));
socket.onAny((event, ...args) => out({ type: "event", event, args }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));

const commands = {
  open: (id) => {
    room.id = id;
    room.localId = randomUUID();
    out({ type: "opened", localId: room.localId });
    socket.emit("preview-room:open-playlist", { playlist_id: room.id, user_id });
  },
  close: () => socket.emit("preview-room:close-playlist", { playlist_id: room.id, user_id }),
  join: () => socket.emit("preview-room:join", state(0, false)),
  leave: () => socket.emit("preview-room:leave", { user_id, playlist_id: room.id }),
  update: (frame, playing) => {
    room.seq = Math.max(Date.now(), room.seq + 1);
    socket.emit("preview-room:room-updated", {
      ...state(Number(frame), playing === "playing"),
      local_id: `${room.localId}#${room.seq}`,
      room_seq: room.seq,
      previous_preview_file_id: "preview-0",
    });
  },
  annotate: (kind, id) =>
    socket.emit(`preview-room:${kind}-annotation`, {
      playlist_id: room.id,
      data: {
        local_id: room.localId,
        user_id,
        time: 1.5,
        obj: { id, type: "path", path: [["M", 1, 2]] },
        laser: false,
      },
    }),
  panzoom: (zoom) =>
    socket.emit("preview-room:panzoom-changed", {
      playlist_id: room.id,
      data: { local_id: room.localId, user_id, x: 10, y: 20, zoom: Number(zoom) },
    }),
  "comparison-panzoom": (zoom) =>
    socket.emit("preview-room:comparison-panzoom-changed", {
      playlist_id: room.id,
      data: { local_id: room.localId, user_id, x: 1, y: 2, zoom: Number(zoom) },
    }),
  quit: () => {
    socket.disconnect();
    process.exit(0);
  },
};

createInterface({ input: process.stdin }).on("line", (line) => {
  const [name, ...args] = line.trim().split(/\s+/);
  if (commands[name]) commands[name](...args);
});
