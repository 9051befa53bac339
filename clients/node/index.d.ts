// Type declarations of switchboard-client (index.js): the public API of the Node.js client of
// the Switchboard gRPC gateway.

import { EventEmitter } from 'events';
import * as grpcJs from '@grpc/grpc-js';
import type { Options as LoaderOptions, PackageDefinition } from '@grpc/proto-loader';

/** A Switchboard status name, as the `switchboard-status` trailer and resets spell it. */
export type StatusName =
  | 'OK'
  | 'NO_RESPONDERS'
  | 'PEER_GONE'
  | 'DEADLINE_EXCEEDED'
  | 'IDLE_TIMEOUT'
  | 'CANCELLED'
  | 'REFUSED'
  | 'UNAUTHENTICATED'
  | 'PERMISSION_DENIED'
  | 'RESOURCE_EXHAUSTED'
  | 'SLOW_CONSUMER'
  | 'PROTOCOL_ERROR'
  | 'INTERNAL'
  | 'APPLICATION';

/**
 * A status to end or abort a stream with: its name (`'APPLICATION'`), its protobuf enum name
 * (`'STATUS_APPLICATION'`), or its native protocol code (13).
 */
export type StatusInput = StatusName | `STATUS_${StatusName}` | number;

/** One piece of a body: bytes, or a string sent as UTF-8. */
export type BodyChunk = Buffer | Uint8Array | string;

/**
 * A whole body: bytes or a string (`null`/`undefined`: empty), or an iterable or async iterable
 * of pieces, e.g. a `Readable` such as `process.stdin` or `fs.createReadStream(file)`.
 */
export type Body = BodyChunk | null | undefined | Iterable<BodyChunk> | AsyncIterable<BodyChunk>;

/** Headers passed unchanged to the receiver of a request or broadcast. */
export type Metadata = Record<string, string>;

/** A channel's membership: the whole of it (`SNAPSHOT`) or one change. */
export interface PresenceUpdate {
  /** `SNAPSHOT`: `peers` is every member; `JOINED`/`LEFT`: `peers` is the one peer. */
  kind: 'SNAPSHOT' | 'JOINED' | 'LEFT' | 'UNSPECIFIED';
  /** Peer ids. */
  peers: string[];
  /** The channel's membership version after this update (+1 per change). */
  version: number;
}

/** A channel's members now, from {@link Client.listPeers}. */
export interface PeerList {
  /** The members' peer ids. */
  peers: string[];
  /** The channel's membership version. */
  version: number;
}

/** How a broadcast was delivered, from {@link Client.broadcast}. */
export interface BroadcastSummary {
  /** Receivers that got the whole message. */
  delivered: number;
  /** Receivers dropped (slow, gone, or left the broadcast). */
  dropped: number;
}

/** Why an incoming request or broadcast was aborted. */
export interface ResetInfo {
  /** The reason, e.g. `'PEER_GONE'`, `'CANCELLED'`, `'DEADLINE_EXCEEDED'`. */
  status: StatusName;
  /** The reason in words. */
  message: string;
}

/** TLS towards the gateway (a relay started with `--tls-grpc`). */
export interface TlsSettings {
  /** PEM CA bundle the gateway's certificate is verified against; default: the system roots. */
  caFile?: string;
  /** PEM client certificate, for a gateway that requires client certificates (mutual TLS). */
  certFile?: string;
  /** PEM private key of `certFile`. */
  keyFile?: string;
  /** The name checked in the gateway's certificate; default: the target's host. */
  serverName?: string;
}

/** How a {@link Client} reaches the gateway. */
export interface ClientSettings {
  /** Credentials (a signed token) sent with every call; empty for an open relay. */
  token?: string;
  /** Channel credentials to use as they are (overrides `tls`). */
  credentials?: grpcJs.ChannelCredentials;
  /** gRPC channel options, merged over the client's own (64 MiB message limits). */
  options?: grpcJs.ChannelOptions;
  /** `true`: TLS with the default roots; an object: TLS with these files. Default: plaintext. */
  tls?: boolean | TlsSettings;
  /**
   * Default true: before a channel's first call, ask the relay where the channel is served
   * (Locate) and make that channel's calls to the relay that serves it (clusters). False: every
   * call goes to `target`.
   */
  locate?: boolean;
}

/** Where a channel is served, as {@link Client.locateChannel} reports it. */
export interface ChannelLocation {
  /** True when the relay asked serves the channel (or runs alone, or has no Locate). */
  here: boolean;
  /** The node id of the relay that serves the channel; empty when `here`. */
  nodeId: string;
  /** That relay's gRPC address HOST:PORT; empty when `here`. */
  grpcAddress: string;
  /** That relay's native address HOST:PORT; empty when `here`. */
  nativeAddress: string;
  /** The cluster membership revision the answer was made at; 0 for a relay alone. */
  revision: number;
}

/** Options of calls that only take a deadline. */
export interface CallOptions {
  /** The call's deadline, in milliseconds from now. */
  timeoutMs?: number;
}

/** Options of {@link Client.send} and {@link Client.openSend}. */
export interface SendOptions extends CallOptions {
  /** The peer id to send to; default: any peer of the channel that serves requests. */
  target?: string;
  /** Headers the responder sees in {@link Incoming.metadata}. */
  metadata?: Metadata;
  /** Milliseconds without bytes moving before the relay ends the stream; 0: its default. */
  idleTimeoutMs?: number;
  /**
   * The peer this call speaks for, which must be on the channel and proven (the token's `peer`
   * claim, or a Respond session of this client on an open relay); default: anonymous.
   */
  senderPeerId?: string;
}

/** Options of {@link Client.broadcast}. */
export interface BroadcastOptions extends CallOptions {
  /** Headers every receiver sees in {@link Incoming.metadata}. */
  metadata?: Metadata;
  /** Milliseconds without bytes moving before the relay ends the stream; 0: its default. */
  idleTimeoutMs?: number;
  /** As in {@link SendOptions.senderPeerId}; that peer does not receive the broadcast. */
  senderPeerId?: string;
}

/**
 * Serves one incoming request: read the body (iterate `request` or `await request.read()`),
 * then return the response body (the response ends OK), or write it with `request.write()` and
 * return nothing. Throw {@link ApplicationError} to end it with APPLICATION and the error's code.
 */
export type RequestHandler = (request: Incoming) =>
  BodyChunk | null | undefined | void | Promise<BodyChunk | null | undefined | void>;

/** Options of {@link Client.respond}. */
export interface RespondOptions {
  /** Keep this identity (e.g. across reconnects); default: the relay assigns one. */
  peerId?: string;
  /** Called with the presence snapshot, then with every change. */
  onPresence?: (update: PresenceUpdate) => void;
  /** Receives the channel's broadcasts; without it they are dropped unread. */
  onBroadcast?: (message: Incoming) => void | Promise<void>;
  /** How long to wait for the join and the presence snapshot; default 10000. */
  joinTimeoutMs?: number;
  /**
   * Per-stream credit in both directions (default true), so that a requester that stops
   * reading its response delays only its own request. False, or a relay without it: the
   * session-wide backpressure of the whole Respond call.
   */
  streamWindows?: boolean;
}

/** A call or stream that did not end with OK. */
export declare class SwitchboardError extends Error {
  /**
   * @param code gRPC status code (`grpc.status.*`), null for a reset seen by a responder
   * @param status Switchboard status name from the `switchboard-status` trailer
   * @param message details
   * @param appCode the responder's application code (with APPLICATION)
   */
  constructor(code: number | null, status: string | null, message: string, appCode?: number | null);
  /** The gRPC status code, or null for a reset seen by a responder. */
  code: number | null;
  /** The gRPC status code's name, e.g. `'UNAVAILABLE'`. */
  codeName: string | null;
  /** The Switchboard status name, e.g. `'NO_RESPONDERS'`, when the gateway sent one. */
  status: string | null;
  /** The status message. */
  details: string;
  /** The responder's application code (with status `'APPLICATION'`), otherwise null. */
  appCode: number | null;
  /** The SwitchboardError of an error of `@grpc/grpc-js` (its code and trailers). */
  static fromServiceError(error: unknown): SwitchboardError;
}

/** An incoming request or broadcast was aborted; `status` says why. */
export declare class StreamReset extends SwitchboardError {
  constructor(status: string, message: string);
}

/** Throw from a request handler to end the response with APPLICATION, `code` and `message`. */
export declare class ApplicationError extends Error {
  constructor(code: number, message?: string);
  /** The application's own error code; it reaches the sender as {@link SwitchboardError.appCode}. */
  code: number;
}

/**
 * An open Send, from {@link Client.openSend}: write the request (`write()`, then `end()`, or
 * `writeAll()`), and iterate it (`for await`) for the response's chunks, or `await read()`.
 * A failed stream makes the iteration throw {@link SwitchboardError}.
 */
export declare class SendCall implements AsyncIterable<Buffer> {
  /** The underlying gRPC call; null while the client is still locating the channel's relay. */
  readonly call: grpcJs.ClientDuplexStream<object, object> | null;
  /** The error the call failed with, once it has. */
  error: SwitchboardError | null;
  /** Writes body bytes; resolves when there is room for more, false if the call has ended. */
  write(data: BodyChunk): Promise<boolean>;
  /** Writes a whole body, then ends the request; false if the call ended first. */
  writeAll(data: Body): Promise<boolean>;
  /** Ends the request body. */
  end(): void;
  /** Resets the stream (the responder sees CANCELLED). */
  cancel(): void;
  /** The response's chunks. */
  [Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined>;
  /** The whole response as one Buffer. */
  read(): Promise<Buffer>;
}

/**
 * One incoming request (or broadcast) of a Respond session. Iterate it (`for await`) for the
 * body, or `await read()`. Answer a request with `write()`, then `end()` or `fail()`. After a
 * reset, iteration and writes throw {@link StreamReset}.
 */
export declare class Incoming implements AsyncIterable<Buffer> {
  /** The Respond session it arrived on. */
  readonly session: Responder;
  /** The stream's id on its session (a 64-bit integer as a decimal string). */
  readonly id: string;
  /** True for a broadcast, which takes no response. */
  readonly isBroadcast: boolean;
  /** The sender's peer id; empty for an anonymous gRPC sender. */
  readonly sender: string;
  /** The sender's metadata. */
  readonly metadata: Metadata;
  /** The stream's remaining time when it arrived, in milliseconds; 0: no deadline. */
  readonly deadlineMs: number;
  /** When it arrived (`Date.now()`). */
  readonly receivedAt: number;
  /** Why the stream was aborted, once it has been; otherwise null. */
  reset: ResetInfo | null;
  /** True once the response has ended (`end`, `fail` or `cancel`). */
  answered: boolean;
  /** Milliseconds left before the stream's deadline, or null without one. */
  readonly remainingMs: number | null;
  /** The body's chunks. */
  [Symbol.asyncIterator](): AsyncGenerator<Buffer, void, undefined>;
  /** The whole body as one Buffer. */
  read(): Promise<Buffer>;
  /** Streams response bytes; resolves when the session can take more. */
  write(data: BodyChunk | null | undefined): Promise<void>;
  /** Ends the response with OK, after the optional last bytes. */
  end(data?: BodyChunk | null): Promise<void>;
  /**
   * Ends the response with an error status that reaches the sender unchanged.
   * @param status default `'APPLICATION'`
   * @param appCode the application's own code (with APPLICATION), default 0
   * @param message a message for the sender
   */
  fail(status?: StatusInput, appCode?: number, message?: string): Promise<void>;
  /** Aborts the request, or leaves the broadcast (default status `'CANCELLED'`). */
  cancel(status?: StatusInput, message?: string): Promise<void>;
  /** Resolves with {@link reset} once the stream is reset, or null after `timeoutMs`. */
  waitReset(timeoutMs: number): Promise<ResetInfo | null>;
}

/**
 * A Respond session, from {@link Client.respond}: one peer on one channel, serving requests
 * (its handlers run concurrently), receiving broadcasts and presence. Events: `'presence'`
 * ({@link PresenceUpdate}), `'broadcast'` ({@link Incoming}), `'close'` (the error that ended
 * it, or null after {@link close}).
 */
export declare class Responder extends EventEmitter {
  /** Prefer {@link Client.respond}, which resolves once the session has joined. */
  constructor(client: Client, channel: string, handler: RequestHandler, options?: RespondOptions);
  /** The channel's id. */
  readonly channel: string;
  /** This peer's id (the one asked for, or the one the relay assigned); null before joining. */
  peerId: string | null;
  /** The channel's other members, kept up to date. */
  peers: Set<string>;
  /** The channel's membership version. */
  version: number;
  /** True once the session has ended. */
  closed: boolean;
  /** The error that ended the session, if one did. */
  error: SwitchboardError | null;
  /** Whether the relay granted stream windows. */
  windows: boolean;
  /** With windows: each request's initial credit for response bytes. */
  responseWindow: number;
  /** With windows: the bytes of each incoming stream the relay sends before credit returns. */
  incomingWindow: number;
  /** Resolves with this session once it has joined and has the presence snapshot. */
  readonly ready: Promise<Responder>;
  /** The underlying gRPC call. */
  readonly call: grpcJs.ClientDuplexStream<object, object>;
  /** Leaves the channel: requests still open get PEER_GONE at their senders. */
  close(): void;
  /** Resolves when the session has ended, with the error that ended it or null. */
  wait(): Promise<SwitchboardError | null>;

  on(event: 'presence', listener: (update: PresenceUpdate) => void): this;
  on(event: 'broadcast', listener: (message: Incoming) => void | Promise<void>): this;
  on(event: 'close', listener: (error: SwitchboardError | null) => void): this;
  once(event: 'presence', listener: (update: PresenceUpdate) => void): this;
  once(event: 'broadcast', listener: (message: Incoming) => void | Promise<void>): this;
  once(event: 'close', listener: (error: SwitchboardError | null) => void): this;
}

/**
 * A watch of a channel's membership without joining it, from {@link Client.watchPeers}: a
 * `SNAPSHOT` first, then every change. Async-iterable (throws {@link SwitchboardError} if the
 * watch fails), and an EventEmitter: `'update'` ({@link PresenceUpdate}), `'error'`
 * ({@link SwitchboardError}), `'end'`.
 */
export declare class PeerWatch extends EventEmitter implements AsyncIterable<PresenceUpdate> {
  /** The underlying gRPC call; null while the client is still locating the channel's relay. */
  readonly call: grpcJs.ClientReadableStream<object> | null;
  /** True once {@link cancel} was called. */
  cancelled: boolean;
  /** Ends the watch; iteration then ends without an error. */
  cancel(): void;
  [Symbol.asyncIterator](): AsyncGenerator<PresenceUpdate, void, undefined>;

  on(event: 'update', listener: (update: PresenceUpdate) => void): this;
  on(event: 'error', listener: (error: SwitchboardError) => void): this;
  on(event: 'end', listener: () => void): this;
  once(event: 'update', listener: (update: PresenceUpdate) => void): this;
  once(event: 'error', listener: (error: SwitchboardError) => void): this;
  once(event: 'end', listener: () => void): this;
}

/** A connection to a relay's gRPC gateway. Failures reject with {@link SwitchboardError}. */
export declare class Client {
  /**
   * @param target the gateway's address HOST:PORT; default {@link DEFAULT_TARGET}
   * @param settings credentials, TLS and gRPC channel options
   */
  constructor(target?: string, settings?: ClientSettings);
  /** The gateway's address. */
  readonly target: string;
  /** The token sent with every call (empty for none). */
  readonly token: string;
  /** Whether calls go to the relay that serves their channel (see {@link ClientSettings.locate}). */
  readonly locate: boolean;
  /** Asks the relay `target` where `channel` is served (not cached; default deadline 10 s). */
  locateChannel(channel: string, options?: CallOptions): Promise<ChannelLocation>;
  /** The generated `switchboard.v1.SwitchboardService` stub. */
  readonly stub: grpcJs.Client;
  /** Closes the gRPC channels (to `target` and to the other relays of a cluster). */
  close(): void;
  /** Opens a Send: write the request and read the response as streams. */
  openSend(channel: string, options?: SendOptions): SendCall;
  /** Sends `data` as one request; resolves to the whole response. */
  send(channel: string, data: Body, options?: SendOptions): Promise<Buffer>;
  /** Streams `data` to every other peer of `channel`. */
  broadcast(channel: string, data: Body, options?: BroadcastOptions): Promise<BroadcastSummary>;
  /** Joins `channel` as a peer serving requests; resolves once joined. */
  respond(channel: string, handler: RequestHandler, options?: RespondOptions): Promise<Responder>;
  /** The members of `channel` now (default deadline 10 s). */
  listPeers(channel: string, options?: CallOptions): Promise<PeerList>;
  /** Watches `channel`'s membership without joining it. */
  watchPeers(channel: string, options?: CallOptions): PeerWatch;
}

/** The largest body chunk the client puts in one gRPC message (64 KiB). */
export declare const CHUNK_SIZE: number;
/** The gateway's default address, `127.0.0.1:7401`. */
export declare const DEFAULT_TARGET: string;
/** Switchboard status names, indexed by their native protocol code. */
export declare const STATUS_NAMES: readonly StatusName[];
/** The `@grpc/proto-loader` options the contract is loaded with. */
export declare const LOADER_OPTIONS: LoaderOptions;
/** The `@grpc/grpc-js` module the client uses (for `grpc.status`, `grpc.credentials`, ...). */
export declare const grpc: typeof grpcJs;
/** The loaded `switchboard.v1` package (message types and the service constructor). */
export declare const proto: grpcJs.GrpcObject;
/** The contract as `@grpc/proto-loader` loaded it. */
export declare const packageDefinition: PackageDefinition;
