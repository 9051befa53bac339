'use strict';
// Node.js client of the Switchboard gRPC gateway (proto/switchboard/v1/switchboard.proto).
//
//   const { Client } = require('switchboard-client');  // ESM: import { Client } from '…'
//   const client = new Client('127.0.0.1:7401');
//   const answer = await client.send(channel, Buffer.from('hello'));
//
// send / openSend: one request streamed to a peer, its response back. broadcast: one message to
// every other peer, resolves to { delivered, dropped }. respond: joins a channel as a peer that
// serves requests (handlers run concurrently) and receives broadcasts and presence.
// listPeers / watchPeers: presence without joining. Failures reject with SwitchboardError,
// carrying the gRPC code and the gateway's `switchboard-status` trailer.

const path = require('path');
const { EventEmitter } = require('events');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const DEFAULT_TARGET = '127.0.0.1:7401';
const CHUNK_SIZE = 64 * 1024;
// Body bytes buffered per incoming request before the session stops reading from the gateway
// (only with a relay that has no stream windows: otherwise the relay's window bounds it).
const INCOMING_BUFFER = 4 * 1024 * 1024;

const PROTO_FILE = 'switchboard/v1/switchboard.proto';
// Where the contract is read from: SWITCHBOARD_PROTO_DIR if set; in the source tree
// (clients/node) the repository's proto/, the one source of truth; in an installed package the
// copy that `npm pack` put beside this file.
function protoDir() {
  if (process.env.SWITCHBOARD_PROTO_DIR) return process.env.SWITCHBOARD_PROTO_DIR;
  const repository = path.join(__dirname, '..', '..', 'proto');
  const inSourceTree = path.basename(__dirname) === 'node' &&
    path.basename(path.dirname(__dirname)) === 'clients' &&
    fs.existsSync(path.join(repository, PROTO_FILE));
  return inSourceTree ? repository : path.join(__dirname, 'proto');
}
const PROTO_DIR = protoDir();
// One set of loader options everywhere: field names as in the .proto, 64-bit integers as
// strings, enums as their names, `kind` names the oneof member that is set.
const LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

const packageDefinition = protoLoader.loadSync(PROTO_FILE, LOADER_OPTIONS);
const proto = grpc.loadPackageDefinition(packageDefinition).switchboard.v1;

const STATUS_NAMES = [
  'OK', 'NO_RESPONDERS', 'PEER_GONE', 'DEADLINE_EXCEEDED', 'IDLE_TIMEOUT', 'CANCELLED',
  'REFUSED', 'UNAUTHENTICATED', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'SLOW_CONSUMER',
  'PROTOCOL_ERROR', 'INTERNAL', 'APPLICATION',
];
const GRPC_CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

/** A call or stream that did not end with OK. */
class SwitchboardError extends Error {
  /**
   * @param {number|null} code gRPC status code (grpc.status.*), null for a reset seen by a responder
   * @param {string|null} status Switchboard status name from the `switchboard-status` trailer
   * @param {string} message details
   * @param {number|null} appCode the responder's application code (with APPLICATION)
   */
  constructor(code, status, message, appCode = null) {
    const label = status || (code !== null && code !== undefined ? GRPC_CODE_NAMES[code] : 'ERROR');
    super(message ? `${label}: ${message}` : label);
    this.name = 'SwitchboardError';
    this.code = code;
    this.codeName = code !== null && code !== undefined ? GRPC_CODE_NAMES[code] : null;
    this.status = status || null;
    this.details = message || '';
    this.appCode = appCode;
  }

  static fromServiceError(error) {
    if (error instanceof SwitchboardError) return error;
    let status = null;
    let appCode = null;
    if (error && error.metadata && typeof error.metadata.get === 'function') {
      const found = error.metadata.get('switchboard-status');
      if (found.length > 0) status = String(found[0]);
      const app = error.metadata.get('switchboard-app-code');
      if (app.length > 0) appCode = Number(app[0]);
    }
    const code = error && typeof error.code === 'number' ? error.code : grpc.status.UNKNOWN;
    return new SwitchboardError(code, status, error ? error.details || error.message : '', appCode);
  }
}

/** The incoming request or broadcast was aborted. `status` is the reason. */
class StreamReset extends SwitchboardError {
  constructor(status, message) {
    super(null, status, message);
    this.name = 'StreamReset';
  }
}

/** Throw from a request handler to end the response with APPLICATION, `code` and `message`. */
class ApplicationError extends Error {
  constructor(code, message = '') {
    super(message);
    this.name = 'ApplicationError';
    this.code = code;
  }
}

function toBuffer(data) {
  if (data === undefined || data === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(data)) return data;
  if (typeof data === 'string') return Buffer.from(data);
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('body chunks must be Buffer, Uint8Array or string');
}

function* split(buffer, size = CHUNK_SIZE) {
  for (let offset = 0; offset < buffer.length; offset += size) {
    yield buffer.subarray(offset, Math.min(buffer.length, offset + size));
  }
}

function isBodyLike(data) {
  return data === undefined || data === null || typeof data === 'string' ||
    Buffer.isBuffer(data) || data instanceof Uint8Array;
}

/** Iterates a body given as Buffer/string, or an (async) iterable of those (e.g. a Readable). */
async function* bodyChunks(data) {
  if (isBodyLike(data)) {
    yield* split(toBuffer(data));
    return;
  }
  for await (const piece of data) yield* split(toBuffer(piece));
}

// The protobuf enum's name of a status given by name ('APPLICATION' or 'STATUS_APPLICATION') or
// native number (13): the protobuf names carry a STATUS_ prefix the native names do not.
function statusValue(status) {
  if (typeof status === 'number') return `STATUS_${STATUS_NAMES[status] || 'INTERNAL'}`;
  const name = String(status).replace(/^STATUS_/, '');
  if (!STATUS_NAMES.includes(name)) throw new TypeError(`unknown Switchboard status ${status}`);
  return `STATUS_${name}`;
}

// The Switchboard name of a protobuf status, as the `switchboard-status` trailer spells it.
function statusName(value) {
  return String(value).replace(/^STATUS_/, '');
}

function presenceFromProto(update) {
  return {
    kind: String(update.kind).replace(/^KIND_/, ''),
    peers: [...update.peers],
    version: Number(update.version),
  };
}

/** Resolves when `call` has buffer room again, or when it has ended (then false). */
function drained(call, state) {
  if (state.ended) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (value) => {
      call.removeListener('drain', onDrain);
      state.waiters.delete(onEnd);
      resolve(value);
    };
    const onDrain = () => done(true);
    const onEnd = () => done(false);
    call.once('drain', onDrain);
    state.waiters.add(onEnd);
  });
}

/** Tracks the end of a call, so writers waiting for 'drain' are released when it ends. */
function trackEnd(call) {
  const state = { ended: false, waiters: new Set() };
  const end = () => {
    if (state.ended) return;
    state.ended = true;
    for (const waiter of [...state.waiters]) waiter();
  };
  call.on('status', end);
  call.on('error', end);
  call.on('close', end);
  return state;
}

async function writeMessage(call, state, message) {
  if (state.ended) return false;
  if (!call.write(message)) return drained(call, state);
  return true;
}

// ---- Send --------------------------------------------------------------------------------

/**
 * An open Send. `write()` body chunks (resolves when there is room), `end()` the request;
 * iterate it (for await) for the response Buffers; a failed stream throws SwitchboardError.
 */
class SendCall {
  /**
   * @param call the gRPC call, or a promise of it (while the client locates the channel's relay)
   * @param onError sees every failure of the call (the client forgets where a moved channel was)
   */
  constructor(call, onError = null) {
    this.error = null;
    this._onError = onError;
    this._pending = null;
    if (call && typeof call.then === 'function') {
      this.call = null;
      this.state = { ended: false, waiters: new Set() };
      this._pending = call.then((opened) => this._attach(opened), (error) => {
        this.error = SwitchboardError.fromServiceError(error);
        this.state.ended = true;
      });
    } else {
      this._attach(call);
    }
  }

  _attach(call) {
    this.call = call;
    const ended = this.state && this.state.ended;
    this.state = trackEnd(call);
    call.on('error', (error) => {
      this.error = SwitchboardError.fromServiceError(error);
      if (this._onError) this._onError(this.error);
    });
    if (ended) call.cancel();  // cancelled while locating
  }

  /** Writes body bytes (split into chunks); resolves false if the call has already ended. */
  async write(data) {
    if (this._pending) await this._pending;
    for (const chunk of split(toBuffer(data))) {
      if (!(await writeMessage(this.call, this.state, { chunk: { data: chunk } }))) return false;
    }
    return !this.state.ended;
  }

  /** Writes a whole body (Buffer, string, or an (async) iterable of chunks), then ends it. */
  async writeAll(data) {
    if (this._pending) await this._pending;
    for await (const chunk of bodyChunks(data)) {
      if (!(await writeMessage(this.call, this.state, { chunk: { data: chunk } }))) return false;
    }
    this.end();
    return true;
  }

  end() {
    if (!this.call) {
      this._pending.then(() => this.end());
      return;
    }
    if (!this.state.ended) this.call.end();
  }

  cancel() {
    if (this.call) this.call.cancel();
    else this.state.ended = true;
  }

  async *[Symbol.asyncIterator]() {
    if (this._pending) await this._pending;
    if (!this.call) throw this.error;
    try {
      for await (const message of this.call) {
        if (message.kind === 'chunk' && message.chunk.data.length > 0) yield message.chunk.data;
      }
    } catch (error) {
      throw SwitchboardError.fromServiceError(error);
    }
    if (this.error) throw this.error;
  }

  /** The whole response as one Buffer. */
  async read() {
    const parts = [];
    for await (const chunk of this) parts.push(chunk);
    return Buffer.concat(parts);
  }
}

// ---- Respond -----------------------------------------------------------------------------

/**
 * One incoming request (or broadcast) of a Respond session. Iterate it (for await) for the body
 * Buffers, or `await read()`. Answer with `write()`, then `end()` or `fail()`. After a reset
 * (`reset` = { status, message }) iteration and writes throw StreamReset. With stream windows
 * (the default), `write()` waits for this request's own credit, which comes back as its
 * requester takes the response, and reading the body returns credit to its sender.
 */
class Incoming {
  constructor(session, start) {
    this.session = session;
    this.id = start.id;
    this.isBroadcast = start.broadcast;
    this.sender = start.sender;
    this.metadata = { ...start.metadata };
    this.deadlineMs = Number(start.deadline_ms);
    this.receivedAt = Date.now();
    this.reset = null;
    this.answered = false;
    this._chunks = [];
    this._buffered = 0;
    this._bodyEnded = false;
    this._discard = false;
    this._wake = null;
    this._resetWaiters = [];
    this._credit = session.responseWindow;  // response bytes we may send (with windows)
    this._creditWaiters = [];
    if (start.data && start.data.length > 0) this._push(start.data);
    if (start.last) this._bodyEnded = true;
  }

  /** Milliseconds left before the stream's deadline, or null without one. */
  get remainingMs() {
    if (this.deadlineMs === 0) return null;
    return Math.max(0, this.deadlineMs - (Date.now() - this.receivedAt));
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this._chunks.length > 0) {
        const chunk = this._chunks.shift();
        this._buffered -= chunk.length;
        this.session._relieved(this);
        this.session._grant(this.id, chunk.length);
        yield chunk;
        continue;
      }
      if (this.reset) throw new StreamReset(this.reset.status, this.reset.message);
      if (this._bodyEnded) return;
      await new Promise((resolve) => { this._wake = resolve; });
    }
  }

  async read() {
    const parts = [];
    for await (const chunk of this) parts.push(chunk);
    return Buffer.concat(parts);
  }

  /** Streams response bytes; resolves when the session can take more. */
  async write(data) {
    this._checkWritable();
    for (let chunk of split(toBuffer(data))) {
      while (chunk.length > 0) {
        const n = await this._takeCredit(chunk.length);
        await this._send({ chunk: { request_id: this.id, data: chunk.subarray(0, n), last: false } });
        chunk = chunk.subarray(n);
      }
    }
  }

  /** Ends the response with OK, after the optional last bytes. */
  async end(data) {
    await this.write(data);
    this.answered = true;
    await this._send({ chunk: { request_id: this.id, data: Buffer.alloc(0), last: true } });
  }

  /** Ends the response with an error status that reaches the sender unchanged. */
  async fail(status = 'APPLICATION', appCode = 0, message = '') {
    this._checkWritable();
    this.answered = true;
    await this._send({
      end: { request_id: this.id, status: statusValue(status), app_code: appCode, message },
    });
  }

  /** Aborts the request, or leaves the broadcast. */
  async cancel(status = 'CANCELLED', message = '') {
    if (this.reset || this.answered) return;
    this.answered = true;
    await this._send({ cancel: { id: this.id, status: statusValue(status), message } });
  }

  /** Resolves with `reset` once the stream is reset, or null after `timeoutMs`. */
  waitReset(timeoutMs) {
    if (this.reset) return Promise.resolve(this.reset);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), timeoutMs);
      this._resetWaiters.push(() => { clearTimeout(timer); resolve(this.reset); });
    });
  }

  _checkWritable() {
    if (this.isBroadcast) throw new SwitchboardError(null, 'PROTOCOL_ERROR', 'a broadcast takes no response');
    if (this.reset) throw new StreamReset(this.reset.status, this.reset.message);
    if (this.answered) throw new SwitchboardError(null, null, 'the response has already ended');
  }

  /** Waits for credit of this request (with windows) and takes up to `want` bytes of it. */
  async _takeCredit(want) {
    if (!this.session.windows) return want;
    while (this._credit <= 0 && !this.reset && !this.session.closed) {
      await new Promise((resolve) => { this._creditWaiters.push(resolve); });
    }
    if (this.reset) throw new StreamReset(this.reset.status, this.reset.message);
    if (this._credit <= 0) throw new SwitchboardError(null, 'PEER_GONE', 'the Respond session has ended');
    const n = Math.min(want, this._credit);
    this._credit -= n;
    return n;
  }

  _addCredit(n) {
    this._credit += n;
    this._wakeWriters();
  }

  _wakeWriters() {
    for (const waiter of this._creditWaiters.splice(0)) waiter();
  }

  async _send(message) {
    const ok = await this.session._write(message);
    if (!ok) {
      if (this.reset) throw new StreamReset(this.reset.status, this.reset.message);
      throw new SwitchboardError(null, 'PEER_GONE', 'the Respond session has ended');
    }
  }

  _wakeReader() {
    const wake = this._wake;
    this._wake = null;
    if (wake) wake();
  }

  _push(data) {
    if (this._discard) {
      this.session._grant(this.id, data.length);
      return;
    }
    this._chunks.push(data);
    this._buffered += data.length;
  }

  _feed(data, last) {
    if (data.length > 0) this._push(data);
    if (last) this._bodyEnded = true;
    this._wakeReader();
  }

  _reset(status, message) {
    if (!this.reset) this.reset = { status, message };
    this._wakeReader();
    this._wakeWriters();
    for (const waiter of this._resetWaiters.splice(0)) waiter();
  }

  _handlerReturned() {
    this._discard = true;
    // The rest of the body is not wanted; its sender may still finish sending it.
    this.session._grant(this.id, this._buffered);
    this._chunks = [];
    this._buffered = 0;
    this.session._relieved(this);
  }
}

/**
 * A Respond session: one peer on one channel. Emits 'presence' ({kind, peers, version}),
 * 'broadcast' (Incoming), 'close' (error or null). `peerId`, `peers` (a Set of the others),
 * `version`, `windows` (whether the relay granted stream windows; then `responseWindow` and
 * `incomingWindow` are its per-stream credits). `close()` leaves the channel.
 */
class Responder extends EventEmitter {
  constructor(client, channel, handler, options = {}, stub = client.stub) {
    super();
    this.channel = channel;
    this.handler = handler;
    this.peerId = null;
    this.peers = new Set();
    this.version = 0;
    this.closed = false;
    this.error = null;
    this._streams = new Map();
    this._full = new Set();
    this._paused = false;
    this.windows = false;
    this.responseWindow = 0;
    this.incomingWindow = 0;
    this._broadcasts = Boolean(options.onBroadcast);
    if (options.onPresence) this.on('presence', options.onPresence);
    if (options.onBroadcast) this.on('broadcast', options.onBroadcast);
    this.call = stub.Respond(client._callMetadata(), {});
    this.state = trackEnd(this.call);
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {});  // respond() reports it; a later rejection is nobody's concern
    this.call.on('data', (message) => this._receive(message));
    this.call.on('error', (error) => {
      const failure = SwitchboardError.fromServiceError(error);
      if (typeof client._noteFailure === 'function') client._noteFailure(channel, failure);
      if (!this.closed) this.error = failure;
    });
    this.call.on('close', () => this._ended());
    this.call.on('status', () => setImmediate(() => this._ended()));
    this.call.write({
      join: {
        channel,
        peer_id: options.peerId || '',
        token: client.token,
        stream_windows: options.streamWindows !== false,
      },
    });
  }

  /** Leaves the channel: requests still open get PEER_GONE at their senders. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.call.cancel();
    this._ended();
  }

  /** Resolves when the session has ended. */
  wait() {
    if (this._isDone) return Promise.resolve(this.error);
    return new Promise((resolve) => this.once('close', resolve));
  }

  async _write(message) {
    return writeMessage(this.call, this.state, message);
  }

  _receive(message) {
    switch (message.kind) {
      case 'joined':
        this.peerId = message.joined.peer_id;
        // An older relay announces no windows: then it has none.
        this.responseWindow = message.joined.response_window;
        this.incomingWindow = message.joined.incoming_window;
        this.windows = this.responseWindow > 0;
        break;
      case 'presence': {
        const update = presenceFromProto(message.presence);
        if (update.kind === 'SNAPSHOT') {
          this.peers = new Set(update.peers.filter((peer) => peer !== this.peerId));
        } else if (update.kind === 'JOINED') {
          for (const peer of update.peers) this.peers.add(peer);
        } else if (update.kind === 'LEFT') {
          for (const peer of update.peers) this.peers.delete(peer);
        }
        this.version = update.version;
        if (update.kind === 'SNAPSHOT') this._resolveReady(this);
        this.emit('presence', update);
        break;
      }
      case 'start':
        this._start(message.start);
        break;
      case 'chunk': {
        const stream = this._streams.get(message.chunk.id);
        if (stream) {
          stream._feed(message.chunk.data, message.chunk.last);
          this._pressure(stream);
        } else {
          this._grant(message.chunk.id, message.chunk.data.length);
        }
        break;
      }
      case 'window': {
        const stream = this._streams.get(message.window.id);
        if (stream) stream._addCredit(message.window.bytes);
        break;
      }
      case 'reset': {
        const stream = this._streams.get(message.reset.id);
        if (stream) {
          this._streams.delete(message.reset.id);
          stream._reset(statusName(message.reset.status), message.reset.message);
          this._relieved(stream);
        }
        break;
      }
      default:
        break;
    }
  }

  /** With windows: `n` more bytes of an incoming stream were taken (read, or dropped unread). */
  _grant(id, n) {
    if (this.windows && n > 0 && !this.state.ended) this.call.write({ window: { id, bytes: n } });
  }

  _start(start) {
    if (start.broadcast && !this._broadcasts) {
      this._grant(start.id, start.data.length);  // nobody wants broadcasts
      return;
    }
    const stream = new Incoming(this, start);
    this._streams.set(stream.id, stream);
    this._pressure(stream);
    if (start.broadcast) {
      setImmediate(() => this._runBroadcast(stream));
    } else {
      setImmediate(() => this._runRequest(stream));
    }
  }

  async _runRequest(request) {
    try {
      const result = await this.handler(request);
      if (!request.answered && !request.reset) await request.end(result);
    } catch (error) {
      if (!(error instanceof StreamReset) && !request.answered && !request.reset) {
        const appCode = error instanceof ApplicationError ? error.code : 1;
        const text = error instanceof ApplicationError ? error.message
          : `handler threw ${error && error.name}: ${error && error.message}`;
        try {
          await request.fail('APPLICATION', appCode, String(text).slice(0, 512));
        } catch (ignored) {
          // the session ended: nobody is left to tell
        }
      }
    } finally {
      this._finished(request);
    }
  }

  async _runBroadcast(message) {
    try {
      const listeners = this.listeners('broadcast');
      for (const listener of listeners) await listener(message);
    } catch (error) {
      if (!(error instanceof StreamReset)) {
        try {
          await message.cancel('CANCELLED', 'the broadcast callback failed');
        } catch (ignored) {
          // the session ended
        }
      }
    } finally {
      this._finished(message);
    }
  }

  _finished(stream) {
    stream._handlerReturned();
    if (this._streams.get(stream.id) === stream) this._streams.delete(stream.id);
  }

  // Flow control towards the gateway without windows: stop reading while any stream's handler
  // lags behind. With windows the relay sends each stream no more than its credit.
  _pressure(stream) {
    if (this.windows) return;
    if (stream._buffered >= INCOMING_BUFFER) this._full.add(stream);
    if (this._full.size > 0 && !this._paused && !this.state.ended) {
      this._paused = true;
      this.call.pause();
    }
  }

  _relieved(stream) {
    if (stream._buffered < INCOMING_BUFFER) this._full.delete(stream);
    if (this._full.size === 0 && this._paused) {
      this._paused = false;
      this.call.resume();
    }
  }

  _ended() {
    if (this._isDone) return;
    this._isDone = true;
    if (!this.error && !this.closed) {
      this.error = new SwitchboardError(grpc.status.UNAVAILABLE, null,
        'the gateway ended the Respond session');
    }
    this.closed = true;
    for (const stream of this._streams.values()) stream._reset('PEER_GONE', 'the Respond session ended');
    this._streams.clear();
    this._full.clear();
    this._rejectReady(this.error || new SwitchboardError(grpc.status.CANCELLED, 'CANCELLED',
      'closed before joining'));
    this.emit('close', this.error);
  }
}

// ---- Presence without joining ------------------------------------------------------------

/** Emits 'update' ({kind, peers, version}), 'error' (SwitchboardError), 'end'. Async-iterable. */
class PeerWatch extends EventEmitter {
  /**
   * @param call the gRPC call, or a promise of it (while the client locates the channel's relay)
   * @param onError sees every failure of the call (the client forgets where a moved channel was)
   */
  constructor(call, onError = null) {
    super();
    this.call = null;
    this.cancelled = false;
    this._queue = [];
    this._wake = null;
    this._done = false;
    this._error = null;
    this._onError = onError;
    if (call && typeof call.then === 'function') {
      call.then((opened) => this._attach(opened), (error) => {
        this._error = SwitchboardError.fromServiceError(error);
        if (this.listenerCount('error') > 0) this.emit('error', this._error);
        this._finish();
      });
    } else {
      this._attach(call);
    }
  }

  _attach(call) {
    this.call = call;
    if (this.cancelled) call.cancel();
    call.on('data', (response) => {
      const converted = presenceFromProto(response.update);
      this._queue.push(converted);
      this._poke();
      this.emit('update', converted);
    });
    call.on('error', (error) => {
      if (!(this.cancelled && error.code === grpc.status.CANCELLED)) {
        this._error = SwitchboardError.fromServiceError(error);
        if (this._onError) this._onError(this._error);
        if (this.listenerCount('error') > 0) this.emit('error', this._error);
      }
      this._finish();
    });
    call.on('end', () => this._finish());
  }

  cancel() {
    this.cancelled = true;
    if (this.call) this.call.cancel();
    else this._finish();
  }

  _poke() {
    const wake = this._wake;
    this._wake = null;
    if (wake) wake();
  }

  _finish() {
    if (this._done) return;
    this._done = true;
    this._poke();
    this.emit('end');
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      if (this._queue.length > 0) {
        yield this._queue.shift();
        continue;
      }
      if (this._done) {
        if (this._error) throw this._error;
        return;
      }
      await new Promise((resolve) => { this._wake = resolve; });
    }
  }
}

// ---- The client --------------------------------------------------------------------------

// A relay refuses a channel it does not serve with UNAVAILABLE and one of these messages: the
// channel lives elsewhere (or is moving), so where it was located is no longer true.
const MOVED_PREFIXES = ['channel is served by relay', 'channel unavailable on this relay'];
const LOCATE_TIMEOUT_MS = 10000;
// Initial metadata of a call a relay carried to the relay serving its channel: that relay's
// gRPC address.
const SERVED_BY = 'switchboard-served-by';

class Client {
  /**
   * @param {string} target gateway address HOST:PORT
   * @param {{token?: string, credentials?: grpc.ChannelCredentials, options?: object,
   *   tls?: boolean|{caFile?: string, certFile?: string, keyFile?: string, serverName?: string},
   *   locate?: boolean}}
   *   settings `tls`: true for TLS with the default roots, or an object: `caFile` (PEM CA bundle
   *   for the gateway's certificate), `certFile`/`keyFile` (client certificate for mutual TLS),
   *   `serverName` (name checked in the gateway's certificate; default: the target's host).
   *   `locate` (default true): ask the relay where each channel is served (gRPC Locate) before
   *   its first call, and make that channel's calls to the relay that serves it (clusters)
   */
  constructor(target = DEFAULT_TARGET, settings = {}) {
    this.target = target;
    this.token = settings.token || '';
    this.locate = settings.locate !== false;
    const options = {
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      'grpc.max_send_message_length': 64 * 1024 * 1024,
    };
    const tls = settings.tls === true ? {} : settings.tls;
    if (tls && tls.serverName) options['grpc.ssl_target_name_override'] = tls.serverName;
    this._credentials = settings.credentials || Client._credentials(tls);
    this._channelOptions = { ...options, ...(settings.options || {}) };
    this.stub = new proto.SwitchboardService(target, this._credentials, this._channelOptions);
    this._located = new Map();   // channel -> Promise of the stub that serves it
    this._relays = new Map();    // gRPC address of another relay -> its stub
    this._elsewhere = new Set(); // channels located on another relay
  }

  /**
   * Where `channel` is served, as the relay this client points at answers (cached per channel):
   * resolves to { here, nodeId, grpcAddress, nativeAddress, revision }. A relay without Locate
   * (older) answers `here`.
   */
  locateChannel(channel, options = {}) {
    return new Promise((resolve, reject) => {
      this.stub.Locate({ channel, token: this.token }, this._callMetadata(),
        Client._callOptions({ timeoutMs: LOCATE_TIMEOUT_MS, ...options }), (error, answer) => {
          if (error && error.code === grpc.status.UNIMPLEMENTED) {
            resolve({ here: true, nodeId: '', grpcAddress: '', nativeAddress: '', revision: 0 });
          } else if (error) {
            reject(SwitchboardError.fromServiceError(error));
          } else {
            resolve({
              here: answer.here || !answer.grpc_address,
              nodeId: answer.node_id,
              grpcAddress: answer.grpc_address,
              nativeAddress: answer.native_address,
              revision: Number(answer.revision),
            });
          }
        });
    });
  }

  /** The stub to make `channel`'s calls with: located once per channel, then cached. */
  _stubFor(channel) {
    if (!this.locate) return Promise.resolve(this.stub);
    let found = this._located.get(channel);
    if (!found) {
      found = this.locateChannel(channel).catch((error) => {
        // A token without the presence permission may not ask (and a bad one fails its call
        // the same way): such calls go to `target`, which answers them itself.
        if (error.code === grpc.status.PERMISSION_DENIED ||
            error.code === grpc.status.UNAUTHENTICATED) return { here: true };
        throw error;
      }).then((where) => {
        if (where.here) return this.stub;
        this._elsewhere.add(channel);
        return this._relay(where.grpcAddress);
      });
      // A failed Locate is not remembered: the next call asks again.
      found.catch(() => { if (this._located.get(channel) === found) this._located.delete(channel); });
      this._located.set(channel, found);
    }
    return found;
  }

  /** The stub for another relay of the cluster, opened once per address. */
  _relay(address) {
    let stub = this._relays.get(address);
    if (!stub) {
      stub = new proto.SwitchboardService(address, this._credentials, this._channelOptions);
      this._relays.set(address, stub);
    }
    return stub;
  }

  /**
   * A relay that carried `call` (made on `route`, what _stubFor gave) to the relay serving
   * `channel` names that one in the call's initial metadata: `channel`'s next calls go there.
   */
  _learnFrom(channel, route, call) {
    if (!this.locate) return;
    call.on('metadata', (metadata) => {
      const [address] = metadata.get(SERVED_BY);
      if (!address || this._located.get(channel) !== route) return;
      this._located.set(channel, Promise.resolve(this._relay(String(address))));
      this._elsewhere.add(channel);
    });
  }

  /**
   * Forgets where `channel` was located when a relay says it does not serve it (any more), or
   * when the other relay it was located on cannot be reached (it may have left the cluster).
   */
  _noteFailure(channel, error) {
    if (!error || error.code !== grpc.status.UNAVAILABLE) return;
    if (this._elsewhere.has(channel) ||
        MOVED_PREFIXES.some((prefix) => String(error.details).startsWith(prefix))) {
      this._located.delete(channel);
      this._elsewhere.delete(channel);
    }
  }

  static _credentials(tls) {
    if (!tls) return grpc.credentials.createInsecure();
    const read = (file) => (file ? fs.readFileSync(file) : null);
    return grpc.credentials.createSsl(read(tls.caFile), read(tls.keyFile), read(tls.certFile));
  }

  close() {
    this.stub.close();
    for (const stub of this._relays.values()) stub.close();
    this._relays.clear();
    this._located.clear();
    this._elsewhere.clear();
  }

  _callMetadata() {
    return new grpc.Metadata();
  }

  static _callOptions(options) {
    const result = {};
    if (options.timeoutMs !== undefined && options.timeoutMs !== null) {
      result.deadline = Date.now() + options.timeoutMs;
    }
    return result;
  }

  /**
   * Opens a Send; returns a SendCall (write/end the request, iterate the response).
   * options: target (peer id), timeoutMs (the stream's deadline), metadata (object of request
   * headers), idleTimeoutMs, senderPeerId.
   */
  openSend(channel, options = {}) {
    const callOptions = Client._callOptions(options);
    const route = this._stubFor(channel);
    const opened = route.then((stub) => {
      const call = stub.Send(this._callMetadata(), callOptions);
      this._learnFrom(channel, route, call);
      call.write({
        open: {
          channel,
          target: options.target || '',
          idle_timeout_ms: options.idleTimeoutMs || 0,
          metadata: options.metadata || {},
          sender_peer_id: options.senderPeerId || '',
          token: this.token,
        },
      });
      return call;
    });
    return new SendCall(opened, (error) => this._noteFailure(channel, error));
  }

  /** Sends `data` (Buffer, string, or (async) iterable of chunks); resolves to the response. */
  async send(channel, data, options = {}) {
    const call = this.openSend(channel, options);
    const writing = call.writeAll(data).catch((error) => {
      call.cancel();
      throw error;
    });
    const [response] = await Promise.all([call.read(), writing]);
    return response;
  }

  /** Streams `data` to every other peer of `channel`; resolves to { delivered, dropped }. */
  async broadcast(channel, data, options = {}) {
    const callOptions = Client._callOptions(options);
    const route = this._stubFor(channel);
    const call = (await route).Broadcast(this._callMetadata(), callOptions);
    this._learnFrom(channel, route, call);
    const state = trackEnd(call);
    let summary = null;
    const finished = new Promise((resolve, reject) => {
      call.on('data', (message) => { if (message.summary) summary = message.summary; });
      call.on('error', (error) => {
        const failure = SwitchboardError.fromServiceError(error);
        this._noteFailure(channel, failure);
        reject(failure);
      });
      call.on('end', () => resolve());
    });
    finished.catch(() => {});
    await writeMessage(call, state, {
      open: {
        channel,
        metadata: options.metadata || {},
        sender_peer_id: options.senderPeerId || '',
        token: this.token,
        idle_timeout_ms: options.idleTimeoutMs || 0,
      },
    });
    for await (const chunk of bodyChunks(data)) {
      if (!(await writeMessage(call, state, { chunk: { data: chunk } }))) break;
    }
    if (!state.ended) call.end();
    await finished;
    if (!summary) {
      throw new SwitchboardError(grpc.status.INTERNAL, null, 'the broadcast ended OK without a summary');
    }
    return { delivered: summary.delivered, dropped: summary.dropped };
  }

  /**
   * Joins `channel` as a peer serving requests; resolves to a Responder once joined.
   * handler(request: Incoming) may be async: it reads the body, writes the response, and
   * returns (a Buffer/string to send, or nothing; the response then ends OK), throws
   * ApplicationError(code, message), or calls request.fail(). options: peerId, onPresence,
   * onBroadcast (receives an Incoming), joinTimeoutMs (default 10000), streamWindows (default
   * true: per-stream credit, so that a requester that stops reading its response delays only
   * its own request; false, or a relay without it, keeps the session-wide backpressure).
   */
  async respond(channel, handler, options = {}) {
    const limit = options.joinTimeoutMs || 10000;
    const route = this._stubFor(channel);
    const responder = new Responder(this, channel, handler, options, await route);
    this._learnFrom(channel, route, responder.call);
    let timer = null;
    const timeout = new Promise((resolve, reject) => {
      timer = setTimeout(() => reject(new SwitchboardError(grpc.status.DEADLINE_EXCEEDED, null,
        `no Joined and presence snapshot within ${limit} ms`)), limit);
    });
    try {
      await Promise.race([responder.ready, timeout]);
    } catch (error) {
      responder.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
    return responder;
  }

  /** The members of `channel` now: { peers, version }. */
  async listPeers(channel, options = {}) {
    const callOptions = Client._callOptions({ timeoutMs: 10000, ...options });
    const route = this._stubFor(channel);
    const stub = await route;
    return new Promise((resolve, reject) => {
      const call = stub.ListPeers({ channel, token: this.token }, this._callMetadata(),
        callOptions, (error, answer) => {
          if (error) {
            const failure = SwitchboardError.fromServiceError(error);
            this._noteFailure(channel, failure);
            reject(failure);
          } else {
            resolve({ peers: [...answer.peers], version: Number(answer.version) });
          }
        });
      this._learnFrom(channel, route, call);
    });
  }

  /** Watches `channel`'s membership without joining: a PeerWatch (SNAPSHOT, then changes). */
  watchPeers(channel, options = {}) {
    const callOptions = Client._callOptions(options);
    const route = this._stubFor(channel);
    const opened = route.then((stub) => {
      const call = stub.WatchPeers({ channel, token: this.token }, this._callMetadata(),
        callOptions);
      this._learnFrom(channel, route, call);
      return call;
    });
    return new PeerWatch(opened, (error) => this._noteFailure(channel, error));
  }
}

module.exports = {
  ApplicationError,
  CHUNK_SIZE,
  Client,
  DEFAULT_TARGET,
  Incoming,
  LOADER_OPTIONS,
  PeerWatch,
  Responder,
  SendCall,
  StreamReset,
  SwitchboardError,
  STATUS_NAMES,
  grpc,
  proto,
  packageDefinition,
};
