'use strict';
// The scenario both entry points of the installed switchboard-client run against a live relay:
// a round trip, an application error, a broadcast to two sessions, presence (watch, list,
// join, leave). `api` is what the entry point gave (require() or import); throws on a mismatch.

const assert = require('assert');
const crypto = require('crypto');

const WAIT_MS = 10000;

/** `promise`, or a rejection naming `what` after WAIT_MS. */
async function within(promise, what) {
  let timer = null;
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The first update of the watch `iterator` that `accept` takes. */
function nextUpdate(iterator, accept, what) {
  return within((async () => {
    for (;;) {
      const step = await iterator.next();
      if (step.done) throw new Error(`the watch ended before ${what}`);
      if (accept(step.value)) return step.value;
    }
  })(), what);
}

async function run(api, target, log) {
  const { Client, SwitchboardError, ApplicationError, StreamReset, grpc } = api;
  const client = new Client(target);
  const channel = crypto.randomUUID();
  try {
    // Presence first: a watch sees the empty channel, then every join and leave.
    const watch = client.watchPeers(channel);
    const updates = watch[Symbol.asyncIterator]();
    const snapshot = await nextUpdate(updates, (u) => u.kind === 'SNAPSHOT', 'snapshot');
    assert.deepStrictEqual(snapshot.peers, []);
    log(`presence snapshot: ${snapshot.peers.length} peers, version ${snapshot.version}`);

    const upperId = crypto.randomUUID();
    const received = [];
    let bothReceived = null;
    const receivedTwice = new Promise((resolve) => { bothReceived = resolve; });
    const receive = (who, body) => {
      received.push([who, body]);
      if (received.length === 2) bothReceived();
    };
    const upper = await client.respond(channel, async (request) => {
      if (request.metadata.fail) throw new ApplicationError(42, 'asked to fail');
      const body = await request.read();
      return Buffer.from(body.toString('utf8').toUpperCase());
    }, {
      peerId: upperId,
      onBroadcast: async (message) => receive('upper', (await message.read()).toString()),
    });
    assert.strictEqual(upper.peerId, upperId);
    const joined = await nextUpdate(updates, (u) => u.kind === 'JOINED', 'join of upper');
    assert.deepStrictEqual(joined.peers, [upperId]);
    log(`presence: ${joined.kind} ${joined.peers.join(',')} version ${joined.version}`);

    // Round trip, a body of several chunks included.
    const answer = await client.send(channel, 'hello through the relay', { timeoutMs: WAIT_MS });
    assert.strictEqual(answer.toString(), 'HELLO THROUGH THE RELAY');
    log(`round trip: ${answer.toString()}`);
    const big = crypto.randomBytes(3 * api.CHUNK_SIZE + 17).toString('hex');
    const bigAnswer = await client.send(channel, big, { timeoutMs: WAIT_MS, target: upperId });
    assert.strictEqual(bigAnswer.toString(), big.toUpperCase());
    log(`round trip: ${bigAnswer.length} bytes (several chunks of ${api.CHUNK_SIZE})`);

    // An application error reaches the sender as a SwitchboardError of this very module.
    const failure = await client.send(channel, 'x', { metadata: { fail: '1' }, timeoutMs: WAIT_MS })
      .then(() => null, (error) => error);
    assert.ok(failure instanceof SwitchboardError, `not a SwitchboardError: ${failure}`);
    assert.ok(!(failure instanceof StreamReset));
    assert.strictEqual(failure.status, 'APPLICATION');
    assert.strictEqual(failure.appCode, 42);
    log(`application error: ${failure.message} (appCode ${failure.appCode})`);

    // A broadcast reaches both sessions.
    const second = await client.respond(channel, () => 'unused', {
      onBroadcast: async (message) => receive('second', (await message.read()).toString()),
    });
    await nextUpdate(updates, (u) => u.kind === 'JOINED' && u.peers[0] === second.peerId,
      'join of the second session');
    const summary = await client.broadcast(channel, 'to every peer', { timeoutMs: WAIT_MS });
    assert.deepStrictEqual(summary, { delivered: 2, dropped: 0 });
    // `delivered` counts receivers that got the whole message; their callbacks may still run.
    await within(receivedTwice, 'broadcast at both sessions');
    assert.deepStrictEqual(received.sort(), [['second', 'to every peer'], ['upper', 'to every peer']]);
    log(`broadcast: delivered=${summary.delivered} dropped=${summary.dropped}, both received it`);

    // Presence without joining, and a session's view of the others.
    const listed = await client.listPeers(channel);
    assert.deepStrictEqual([...listed.peers].sort(), [second.peerId, upperId].sort());
    assert.deepStrictEqual([...upper.peers], [second.peerId]);
    log(`listPeers: ${listed.peers.length} peers, version ${listed.version}`);
    second.close();
    const left = await nextUpdate(updates, (u) => u.kind === 'LEFT', 'leave of the second session');
    assert.deepStrictEqual(left.peers, [second.peerId]);
    log(`presence: ${left.kind} version ${left.version}`);
    upper.close();
    await nextUpdate(updates, (u) => u.kind === 'LEFT' && u.peers[0] === upperId, 'leave of upper');
    watch.cancel();

    // No responder left: the status comes back by name, with the gRPC code.
    const none = await client.send(channel, 'anyone?', { timeoutMs: WAIT_MS }).then(() => null, (e) => e);
    assert.ok(none instanceof SwitchboardError);
    assert.strictEqual(none.status, 'NO_RESPONDERS');
    assert.strictEqual(typeof grpc.status.UNAVAILABLE, 'number');
    log(`no responders: ${none.codeName} ${none.status}`);
  } finally {
    client.close();
  }
}

module.exports = { run };
