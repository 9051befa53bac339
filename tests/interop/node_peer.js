#!/usr/bin/env node
'use strict';
// A Node.js peer for the interop driver (run_interop.py): one role per process, reporting
// events as lines on stdout so the driver can synchronize on them.
//
//   node_peer.js respond   --server A --channel C [--mode echo|never|sink|pattern] [--peer-id P]
//     (pattern: answers each request with the `size` bytes its metadata asks for, of the
//     pattern in patternBlock(), once its body has ended)
//   node_peer.js send      --server A --channel C [--size N] [--target P] [--timeout-ms T]
//   node_peer.js broadcast --server A --channel C [--size N]
//   node_peer.js watch     --server A --channel C
//   every role also takes [--token JWT]
//
// Lines (fields separated by one space, '-' for empty):
//   ready <peer_id|-> <version>          joined (respond) or snapshot received (watch)
//   presence <KIND> <version> <peers,>   a presence update (respond, watch)
//   request <id> <sender> <bytes> <sha256> <deadline_ms> <outcome>   a request served (respond)
//   broadcast <sender> <bytes> <sha256>  a broadcast received whole (respond)
//   reset <id> <STATUS>                  an incoming stream was reset (respond)
//   sent <bytes> <sha256>                the request/broadcast body sent (send, broadcast)
//   received <bytes> <sha256>            the response received (send)
//   summary <delivered> <dropped>        the broadcast summary (broadcast)
//   status <grpc code name> <switchboard-status|-> <app code|-> <elapsed_ms> <message...>
//                                        how a send/broadcast ended (OK or an error)
//   closed <error|->                     a respond/watch session ended
// respond and watch run until stdin closes or SIGTERM; every wait is bounded.

const crypto = require('crypto');
const path = require('path');
const { Client, SwitchboardError } = require(path.join(__dirname, '..', '..', 'clients', 'node'));

const MAX_WAIT_MS = 120000;  // longest a "never answering" handler waits for its reset

function parseArgs(argv) {
  const [role, ...rest] = argv;
  const options = { role };
  for (let i = 0; i < rest.length; i += 2) {
    if (!rest[i].startsWith('--') || i + 1 >= rest.length) {
      throw new Error(`bad argument '${rest[i]}'`);
    }
    options[rest[i].slice(2)] = rest[i + 1];
  }
  if (!options.server || !options.channel) throw new Error('--server and --channel are required');
  return options;
}

function say(...fields) {
  process.stdout.write(`${fields.map((f) => (f === '' || f === null || f === undefined ? '-' : String(f))).join(' ')}\n`);
}

function sayStatus(error, started) {
  const elapsed = Date.now() - started;
  if (!error) {
    say('status', 'OK', 'OK', '-', elapsed, '-');
    return;
  }
  const e = error instanceof SwitchboardError ? error : SwitchboardError.fromServiceError(error);
  say('status', e.codeName || 'UNKNOWN', e.status, e.appCode === null ? '-' : e.appCode, elapsed,
    (e.details || '-').replace(/\s+/g, ' '));
}

/** Yields `size` random bytes in 1 MiB pieces, hashing them into `hash`. */
function* randomBody(size, hash) {
  const block = 1 << 20;
  for (let left = size; left > 0;) {
    const piece = crypto.randomBytes(Math.min(block, left));
    hash.update(piece);
    left -= piece.length;
    yield piece;
  }
}

/** Block `index` (64 KiB) of the response pattern the interop driver checks (run_interop.py). */
function patternBlock(index) {
  const digest = crypto.createHash('sha256').update(String(index)).digest();
  return Buffer.concat(Array(2048).fill(digest));
}

function untilStopped(onStop) {
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    onStop();
  };
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function presenceLine(update) {
  say('presence', update.kind, update.version, update.peers.join(',') || '-');
}

async function serve(request, mode) {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  let outcome = 'ok';
  try {
    if (mode === 'never') {
      const reset = await request.waitReset(MAX_WAIT_MS);
      say('reset', request.id, reset ? reset.status : 'none');
      outcome = reset ? `reset:${reset.status}` : 'none';
      return;
    }
    for await (const chunk of request) {
      hash.update(chunk);
      bytes += chunk.length;
      if (mode === 'echo') await request.write(chunk);
    }
    if (mode === 'pattern') {
      const size = Number(request.metadata.size || 0);
      for (let at = 0, index = 0; at < size; at += 65536, index += 1) {
        const block = patternBlock(index);
        await request.write(block.subarray(0, Math.min(block.length, size - at)));
      }
    }
    await request.end();
  } catch (error) {
    outcome = error instanceof SwitchboardError ? `error:${error.status || error.codeName}` : `error:${error.message}`;
    if (request.reset) say('reset', request.id, request.reset.status);
  } finally {
    say('request', request.id, request.sender, bytes, hash.digest('hex'), request.deadlineMs, outcome);
  }
}

async function respond(client, options) {
  const mode = options.mode || 'echo';
  const responder = await client.respond(options.channel, (request) => serve(request, mode), {
    peerId: options['peer-id'],
    onPresence: presenceLine,
    onBroadcast: async (message) => {
      const hash = crypto.createHash('sha256');
      let bytes = 0;
      try {
        for await (const chunk of message) {
          hash.update(chunk);
          bytes += chunk.length;
        }
        say('broadcast', message.sender, bytes, hash.digest('hex'));
      } catch (error) {
        say('reset', message.id, message.reset ? message.reset.status : error.message);
      }
    },
  });
  say('ready', responder.peerId, responder.version);
  await new Promise((resolve) => {
    responder.once('close', resolve);
    untilStopped(() => responder.close());
  });
  say('closed', responder.error ? responder.error.message.replace(/\s+/g, ' ') : '-');
}

async function send(client, options) {
  const size = Number(options.size || 0);
  const sentHash = crypto.createHash('sha256');
  const receivedHash = crypto.createHash('sha256');
  let received = 0;
  const started = Date.now();
  const call = client.openSend(options.channel, {
    target: options.target,
    timeoutMs: options['timeout-ms'] !== undefined ? Number(options['timeout-ms']) : undefined,
  });
  let error = null;
  const writing = call.writeAll(randomBody(size, sentHash)).catch((e) => { error = error || e; });
  try {
    for await (const chunk of call) {
      receivedHash.update(chunk);
      received += chunk.length;
    }
  } catch (e) {
    error = e;
  }
  await writing;
  say('sent', size, sentHash.digest('hex'));
  say('received', received, receivedHash.digest('hex'));
  sayStatus(error, started);
}

async function broadcast(client, options) {
  const size = Number(options.size || 0);
  const hash = crypto.createHash('sha256');
  const started = Date.now();
  try {
    const body = [...randomBody(size, hash)];
    say('sent', size, hash.digest('hex'));
    const summary = await client.broadcast(options.channel, body);
    say('summary', summary.delivered, summary.dropped);
    sayStatus(null, started);
  } catch (e) {
    sayStatus(e, started);
  }
}

async function watch(client, options) {
  const watcher = client.watchPeers(options.channel);
  let first = true;
  const done = new Promise((resolve) => {
    watcher.on('update', (update) => {
      presenceLine(update);
      if (first) {
        first = false;
        say('ready', '-', update.version);
      }
    });
    watcher.on('error', (error) => say('closed', error.message.replace(/\s+/g, ' ')));
    watcher.on('end', resolve);
  });
  untilStopped(() => watcher.cancel());
  await done;
  say('closed', '-');
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const tls = options['ca-file'] ? {
    caFile: options['ca-file'], certFile: options['cert-file'], keyFile: options['key-file'],
  } : undefined;
  const client = new Client(options.server, { token: options.token || '', tls });
  const roles = { respond, send, broadcast, watch };
  if (!roles[options.role]) throw new Error(`unknown role '${options.role}'`);
  await roles[options.role](client, options);
  client.close();
}

main().then(() => process.exit(0), (error) => {
  process.stderr.write(`node_peer: ${error && error.stack ? error.stack : error}\n`);
  if (error instanceof SwitchboardError) {
    say('status', error.codeName || 'UNKNOWN', error.status, error.appCode === null ? '-' : error.appCode, 0,
      (error.details || '-').replace(/\s+/g, ' '));
  }
  process.exit(1);
});
