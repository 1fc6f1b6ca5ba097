/**
 * Error codes of the native protocol (docs/protocol.md), and the client's own below 100.
 * Branch on `err.code`, never on the message.
 */
export const ErrorCode = Object.freeze({
  // client side: no server reply could be had
  CONNECTION_LOST: 1, // the socket closed before the reply came: the command may have been applied
  CLOSED: 2, // the client was closed, or the server refused it for good (close code 45xx)
  // the server's
  INTERNAL: 100,
  UNAUTHORIZED: 101,
  UNKNOWN_CHANNEL: 102,
  PERMISSION_DENIED: 103,
  METHOD_NOT_FOUND: 104,
  ALREADY_SUBSCRIBED: 105,
  LIMIT_EXCEEDED: 106,
  BAD_REQUEST: 107,
  NOT_AVAILABLE: 108,
  TOKEN_EXPIRED: 109,
  NOT_SUBSCRIBED: 110,
  TOO_MANY_REQUESTS: 111,
  UNRECOVERABLE_POSITION: 112,
  CONFLICT: 113,
  TIMEOUT: 114, // also a command the client gave up waiting for (its `timeout`)
  TASK_FAILED: 115,
});

/** WebSocket close codes the gateway sends; 4500-4999 mean "do not reconnect". */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TOKEN_EXPIRED: 4001,
  SLOW_CONSUMER: 4002,
  RATE_LIMITED: 4003,
  CONNECTION_LIMIT: 4004,
  CONNECT_TIMEOUT: 4005,
  NO_PONG: 4006,
  INSUFFICIENT_STATE: 4007,
  INVALID_TOKEN: 4500,
  BAD_FRAME: 4501,
  TOKEN_REVOKED: 4502,
  FORBIDDEN: 4503,
  DISCONNECTED: 4504,
});

/** Whether a close code is terminal: reconnecting with the same credentials is pointless. */
export function isTerminalClose(code) {
  return code >= 4500 && code <= 4999;
}

/**
 * An error the server answered (`code` >= 100) or the client's own (`code` < 100).
 * A conflict (113) carries the room's current `version` and `state`; a refused connection
 * carries the `closeCode`.
 */
export class SwitchboardError extends Error {
  constructor(code, message, details = {}) {
    super(message || `error ${code}`);
    this.name = 'SwitchboardError';
    this.code = code;
    this.details = details;
    for (const [key, value] of Object.entries(details)) {
      if (!(key in this)) this[key] = value;
    }
  }

  /** True for errors worth retrying as they are (108 not available, 111 too many requests...). */
  get temporary() {
    return Boolean(this.details.temporary) || this.code === ErrorCode.CONNECTION_LOST;
  }

  static fromReply(error) {
    const { code, message, ...details } = error ?? {};
    return new SwitchboardError(Number(code ?? ErrorCode.INTERNAL), String(message ?? ''), details);
  }
}
