// Kitsu's Socket.IO client (socket.io-client 4, as in Kitsu's package.json) on namespace /events.
// Usage: node events_client.mjs '{"url": "http://127.0.0.1:5001", "cookie": "<jwt>"}'
// Options: url, cookie | bearer | auth (a token), transports (default: polling then websocket).
// Prints one JSON object per line: connect, upgrade, event, connect_error, disconnect.
// A line "quit" on stdin disconnects and exits.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const options = JSON.parse(process.argv[2]);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const extraHeaders = {};
if (options.cookie) extraHeaders.Cookie = `access_token_cookie=${options.cookie}`;
if (options.bearer) extraHeaders.Authorization = `Bearer ${options.bearer}`;

const socket = io(`${options.url}/events`, {
  extraHeaders,
  auth: options.auth ? { token: options.auth } : undefined,
  transports: options.transports || ["polling", "websocket"],
  reconnection: false,
});

socket.on("connect", () => {
  const engine = socket.io.engine;
  out({ type: "connect", transport: engine.transport.name });
  engine.on("upgrade", (transport) => out({ type: "upgrade", transport: transport.name }));
});
socket.onAny((event, ...args) => out({ type: "event", event, args }));
socket.on("connect_error", (err) => out({ type: "connect_error", message: err.message }));
socket.on("disconnect", (reason) => out({ type: "disconnect", reason }));

createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "quit") {
    socket.disconnect();
    process.exit(0);
  }
});
