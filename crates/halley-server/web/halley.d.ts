// Type declarations for halley.js, the Bayeux (CometD protocol) client
// served by Halley at /halley.js.

/** A Bayeux message, as sent and received. */
export interface Message {
  channel: string;
  id?: string;
  clientId?: string;
  data?: unknown;
  successful?: boolean;
  error?: string;
  advice?: Advice;
  ext?: Record<string, unknown>;
  subscription?: string | string[];
  [field: string]: unknown;
}

/** The server's advice: what to do after a reply. */
export interface Advice {
  reconnect?: "retry" | "handshake" | "none";
  interval?: number;
  timeout?: number;
  maxInterval?: number;
  "multiple-clients"?: boolean;
}

export type State = "disconnected" | "connecting" | "connected" | "reconnecting" | "offline";

export interface StateInfo {
  /** Milliseconds until the next attempt, while connecting, reconnecting or offline. */
  delay?: number;
  /** Why the client stopped (handshake denied, reconnect "none", ...). */
  error?: BayeuxError;
}

export interface HandshakeInfo {
  clientId: string;
  /** A new session replacing one the server forgot (subscriptions were sent again). */
  rehandshake: boolean;
  /** Whether the server accepted the ack extension. */
  ack: boolean;
}

export interface Subscription {
  readonly channel: string;
  /** Stops this callback; the channel is unsubscribed when it was the last one. */
  unsubscribe(): Promise<void>;
}

/** What a transport is given: report replies and failures here. */
export interface TransportHooks {
  receive(messages: Message[]): void;
  fail(messages: Message[], error: BayeuxError): void;
}

export interface Transport {
  /** Sends a batch; its replies (or failure) must come within `timeoutMs`. */
  send(messages: Message[], timeoutMs: number): void;
  /** Best effort, no reply expected (the page is going away). */
  leave?(messages: Message[]): boolean;
  /** Stops everything in flight, without reporting failures. */
  close(): void;
}

export interface TransportClass {
  /** The Bayeux connection type, e.g. "long-polling". */
  readonly type: string;
  supported(env: object): boolean;
  new (url: string, hooks: TransportHooks, env: any): Transport;
}

export interface Options {
  /** Connection types to use, in order of preference. Default `["websocket", "long-polling"]`. */
  transports?: Array<"websocket" | "long-polling">;
  /** Added to the wait after each consecutive failure, ms. Default 1000. */
  backoffIncrement?: number;
  /** The longest back-off, ms. Default 30000. */
  maxBackoff?: number;
  /** How long a reply may take beyond the server's hold time, ms. Default 10000. */
  maxNetworkDelay?: number;
  /** Offer the ack extension (used only if the server accepts it). Default true. */
  ack?: boolean;
  /** Send `/meta/disconnect` when the page is hidden for good (`pagehide`). Default true. */
  disconnectOnPageHide?: boolean;
  /** Replaces the transports (tests, custom transports). */
  transportClasses?: TransportClass[];
  /** Where timers, fetch, WebSocket, navigator and events come from. Default `globalThis`. */
  env?: any;
}

export class BayeuxError extends Error {
  constructor(message: string, options?: { reply?: Message; retry?: boolean; unopened?: boolean });
  /** The server's failed reply, e.g. `{error: "403::subscribe_denied", ...}`. */
  readonly reply?: Message;
  /** A network failure (worth retrying), rather than a refusal. */
  readonly retry: boolean;
  /** The transport could not connect at all. */
  readonly unopened: boolean;
}

export class Halley {
  constructor(url: string, options?: Options);
  readonly state: State;
  /** The connection type in use, e.g. "websocket", or null before the handshake. */
  readonly transport: string | null;
  readonly clientId: string | null;
  /** Whether the server accepted the ack extension. */
  readonly ackEnabled: boolean;

  on(event: "state", listener: (state: State, info: StateInfo) => void): () => void;
  on(event: "transport", listener: (type: string) => void): () => void;
  on(event: "handshake", listener: (info: HandshakeInfo) => void): () => void;

  /** Handshakes unless already under way; resolves once connected. */
  connect(): Promise<void>;
  /** Subscribes to a channel or glob (`/a/*`, `/a/**`); connects if needed. */
  subscribe<T = any>(channel: string, callback: (data: T, message: Message) => void): Promise<Subscription>;
  /** Publishes on a broadcast channel; resolves with the server's reply. */
  publish(channel: string, data: unknown): Promise<Message>;
  /** Calls `/service/<name>` (or a full `/service/...` channel); resolves with the reply's data. */
  call<T = any>(service: string, data?: unknown): Promise<T>;
  /** Sends every message `fn` sends in one request. */
  batch<T>(fn: () => T): T;
  /** Ends the session and forgets the subscriptions. */
  disconnect(): Promise<void>;
}

export class LongPolling implements Transport {
  static readonly type: "long-polling";
  static supported(env: object): boolean;
  constructor(url: string, hooks: TransportHooks, env: any);
  send(messages: Message[], timeoutMs: number): void;
  leave(messages: Message[]): boolean;
  close(): void;
}

export class WebSocketTransport implements Transport {
  static readonly type: "websocket";
  static supported(env: object): boolean;
  constructor(url: string, hooks: TransportHooks, env: any);
  send(messages: Message[], timeoutMs: number): void;
  leave(messages: Message[]): boolean;
  close(): void;
}

export default Halley;
