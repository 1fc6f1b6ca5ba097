// Type declarations of @switchboard/client (the code is plain JavaScript).

export declare const ErrorCode: Readonly<{
  CONNECTION_LOST: 1;
  CLOSED: 2;
  INTERNAL: 100;
  UNAUTHORIZED: 101;
  UNKNOWN_CHANNEL: 102;
  PERMISSION_DENIED: 103;
  METHOD_NOT_FOUND: 104;
  ALREADY_SUBSCRIBED: 105;
  LIMIT_EXCEEDED: 106;
  BAD_REQUEST: 107;
  NOT_AVAILABLE: 108;
  TOKEN_EXPIRED: 109;
  NOT_SUBSCRIBED: 110;
  TOO_MANY_REQUESTS: 111;
  UNRECOVERABLE_POSITION: 112;
  CONFLICT: 113;
  TIMEOUT: 114;
  TASK_FAILED: 115;
}>;

export declare const CloseCode: Readonly<Record<string, number>>;

export declare function isTerminalClose(code: number): boolean;

export declare class SwitchboardError extends Error {
  constructor(code: number, message?: string, details?: Record<string, unknown>);
  readonly code: number;
  readonly details: Record<string, unknown>;
  /** On a conflict (113): the room's current version and state. */
  readonly version?: number;
  readonly state?: unknown;
  /** On a refused connection: the WebSocket close code. */
  readonly closeCode?: number;
  readonly temporary: boolean;
  static fromReply(error: { code: number; message: string }): SwitchboardError;
}

export interface Position {
  offset: string;
  epoch: string;
}

export interface Publication {
  channel: string;
  offset: string | null;
  data: unknown;
  event?: string;
}

export interface ClientInfo {
  user: string;
  client: string;
  name?: string;
  info?: unknown;
}

export interface SubscribedContext {
  channel: string;
  recovered: boolean;
  resubscribed: boolean;
  epoch: string | null;
  offset: string | null;
}

export interface SubscriptionHandlers {
  onPublication?: (publication: Publication) => void;
  onJoin?: (info: ClientInfo) => void;
  onLeave?: (info: ClientInfo) => void;
  onSubscribed?: (ctx: SubscribedContext) => void;
  onRecoveryFailed?: (ctx: SubscribedContext) => void;
  onError?: (error: SwitchboardError) => void;
}

type Unsubscribe = () => void;

declare class Emitter {
  on(event: string, handler: (...args: any[]) => void): Unsubscribe;
  once(event: string, handler: (...args: any[]) => void): Unsubscribe;
  off(event: string, handler: (...args: any[]) => void): void;
}

export declare class Subscription extends Emitter {
  readonly channel: string;
  readonly offset: string | null;
  readonly epoch: string | null;
  readonly recovered: boolean | null;
  readonly subscribed: boolean;
  position(): Position | null;
  unsubscribe(): Promise<void>;
}

export interface RoomSnapshot<S = Record<string, unknown>> {
  room: string;
  version: number;
  state: S;
  people: string[];
}

export interface RoomChange {
  cause: 'join' | 'rejoin' | 'push' | 'update' | 'conflict' | 'gap' | 'deleted';
  patch?: unknown;
  state?: unknown;
  deleted?: boolean;
}

export declare class Room<S = Record<string, unknown>> extends Emitter {
  readonly room: string;
  readonly version: number | null;
  readonly state: S | null;
  readonly people: string[];
  readonly deleted: boolean;
  onChange(handler: (room: Room<S>, change: RoomChange) => void): Unsubscribe;
  snapshot(): RoomSnapshot<S | null>;
}

export interface SwitchboardOptions {
  token?: string;
  getToken?: () => Promise<string> | string;
  name?: string;
  timeout?: number;
  rpcTimeout?: number;
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  WebSocket?: unknown;
  autoConnect?: boolean;
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'closed';

export declare class Switchboard extends Emitter {
  constructor(url: string, options: SwitchboardOptions);
  readonly url: string;
  readonly state: ConnectionState;
  readonly client: string | null;
  readonly user: string | null;
  connect(): void;
  close(): void;
  ready(timeout?: number): Promise<void>;

  on(event: 'state', handler: (e: { state: ConnectionState; previous: ConnectionState }) => void): Unsubscribe;
  on(event: 'connected', handler: (e: { client: string; user: string }) => void): Unsubscribe;
  on(event: 'disconnected', handler: (e: { code: number; reason: string; reconnect: boolean }) => void): Unsubscribe;
  on(event: 'reconnecting', handler: (e: { attempt: number; delay: number }) => void): Unsubscribe;
  on(event: 'refreshed', handler: (e: { expiresIn: number | null }) => void): Unsubscribe;
  on(event: 'recoveryFailed', handler: (ctx: SubscribedContext) => void): Unsubscribe;
  on(event: 'room', handler: (room: Room, change: RoomChange) => void): Unsubscribe;
  on(event: 'error', handler: (error: SwitchboardError) => void): Unsubscribe;

  subscribe(
    channel: string,
    handlers?: SubscriptionHandlers,
    options?: { since?: Position; token?: string },
  ): Promise<Subscription>;
  unsubscribe(channel: string): Promise<void>;
  getSubscription(channel: string): Subscription | undefined;
  publish(channel: string, data: unknown, options?: { event?: string }): Promise<Position>;
  history(
    channel: string,
    options?: { since?: Position; limit?: number },
  ): Promise<{ publications: Publication[]; offset: string; epoch: string }>;
  presence(channel: string): Promise<Record<string, ClientInfo>>;
  rpc<T = unknown>(method: string, data?: unknown, options?: { room?: string; timeout?: number }): Promise<T>;
  ping(): Promise<void>;

  joinRoom<S = Record<string, unknown>>(
    room: string,
    options?: { state?: S; onRoom?: (room: Room<S>, change: RoomChange) => void },
  ): Promise<Room<S>>;
  leaveRoom(room: string): Promise<RoomSnapshot>;
  getRoom(room: string): Promise<RoomSnapshot>;
  room(room: string): Room | undefined;
  updateRoom<S = Record<string, unknown>>(
    room: string,
    patch: Record<string, unknown> | ((state: S) => Record<string, unknown>),
    options?: { version?: number | true; retries?: number },
  ): Promise<Room<S> | RoomSnapshot<S>>;
  onRoom(handler: (room: Room, change: RoomChange) => void): Unsubscribe;
}

export declare function compareOffsets(a: string, b: string): number;
export declare function mergePatch(target: unknown, patch: unknown): unknown;
