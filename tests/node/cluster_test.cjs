'use strict';
// The Node client against a real two-relay cluster (etcd + two relays on loopback): pointed at
// relay r1 only, it locates each channel and makes its calls to the relay that serves it; with
// locating off, r1 carries the calls for a channel r2 serves and names r2; a call on a stale
// route is carried and the route then points at r2; a call r1 refuses (marked carried already)
// makes the client locate again; after r2 leaves, the client finds r1 again.
//
//   node tests/node/cluster_test.cjs --server PATH/switchboard-server

const assert = require('assert');
const { spawn } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');

const { Client, SwitchboardError, grpc } = require('../../clients/node/index.js');

const START_TIMEOUT_MS = 30000;
const POLL_INTERVAL_MS = 50;
const MAX_CHANNEL_TRIES = 500;

const processes = [];

function argument(name) {
  const index = process.argv.indexOf(name);
  if (index < 0 || index + 1 >= process.argv.length) throw new Error(`missing ${name}`);
  return process.argv[index + 1];
}

function pause(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}

/** Polls `check` (async, truthy when done) every POLL_INTERVAL_MS, at most `limitMs`. */
async function until(what, check, limitMs = START_TIMEOUT_MS) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const result = await check().catch(() => false);
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await pause(POLL_INTERVAL_MS);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function connects(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('connect', () => { socket.destroy(); resolve(true); });
    socket.on('error', () => resolve(false));
  });
}

function get(address, urlPath) {
  return new Promise((resolve, reject) => {
    const request = http.get(`http://${address}${urlPath}`, { timeout: 5000 }, (response) => {
      const parts = [];
      response.on('data', (part) => parts.push(part));
      response.on('end', () => resolve({ status: response.statusCode, body: Buffer.concat(parts).toString() }));
    });
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', reject);
  });
}

function start(command, args) {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  processes.push(child);
  child.stderr.resume();
  return child;
}

async function startEtcd(dir) {
  const client = await freePort();
  const peer = await freePort();
  const url = `http://127.0.0.1:${client}`;
  const child = start('etcd', ['--data-dir', dir, '--listen-client-urls', url,
    '--advertise-client-urls', url, '--listen-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
    '--initial-cluster', `default=http://127.0.0.1:${peer}`]);
  child.stdout.resume();
  await until('etcd', () => connects(client));
  return url;
}

/** Starts a relay; resolves to { child, core, grpc, admin } once it printed its addresses. */
function startRelay(server, host, etcd, nodeId) {
  const child = start(server, ['--listen', `${host}:0`, '--grpc-listen', `${host}:0`,
    '--admin-listen', `${host}:0`, '--cluster-etcd', etcd, '--node-id', nodeId,
    '--cluster-lease-ttl', '2s']);
  return new Promise((resolve, reject) => {
    const relay = { child };
    let text = '';
    const timer = setTimeout(() => reject(new Error(`${nodeId} printed no addresses`)), START_TIMEOUT_MS);
    child.on('exit', (code) => reject(new Error(`${nodeId} exited with ${code}`)));
    child.stdout.on('data', (data) => {
      text += data.toString();
      for (const match of text.matchAll(/^listening (core|grpc|admin) (\S+)$/gm)) relay[match[1]] = match[2];
      if (relay.core && relay.grpc && relay.admin) {
        clearTimeout(timer);
        resolve(relay);
      }
    });
  });
}

async function clusterReady(relay, members) {
  const health = await get(relay.admin, '/healthz');
  if (health.status !== 200) return false;
  const metrics = await get(relay.admin, '/metrics');
  return metrics.status === 200 && new RegExp(`^switchboard_cluster_members ${members}$`, 'm').test(metrics.body);
}

/** The relay's switchboard_cluster_carried_calls_total. */
async function carriedCalls(relay) {
  const metrics = await get(relay.admin, '/metrics');
  const match = /^switchboard_cluster_carried_calls_total (\d+)$/m.exec(metrics.body);
  assert(match, 'no switchboard_cluster_carried_calls_total');
  return Number(match[1]);
}

/** Makes every call of `client` look carried already, which a relay never carries again. */
function markCarried(client) {
  client._callMetadata = () => {
    const metadata = new grpc.Metadata();
    metadata.set('switchboard-carried-by', 'test');
    return metadata;
  };
}

/** A channel Locate on r1 places on `nodeId` ('' for r1 itself). */
async function channelOn(client, nodeId) {
  for (let i = 0; i < MAX_CHANNEL_TRIES; i += 1) {
    const channel = crypto.randomUUID();
    const where = await client.locateChannel(channel);
    if ((nodeId === '' && where.here) || (!where.here && where.nodeId === nodeId)) return { channel, where };
  }
  throw new Error(`no channel placed on ${nodeId || 'r1'} in ${MAX_CHANNEL_TRIES} tries`);
}

/** A responder and a sender on `channel`, both through `client` (pointed at r1). */
async function exchange(client, channel) {
  let broadcastReceived;
  const broadcastSeen = new Promise((resolve) => { broadcastReceived = resolve; });
  const responder = await client.respond(channel, async (request) => {
    const body = await request.read();
    return Buffer.concat([Buffer.from('echo:'), body]);
  }, { onBroadcast: async (message) => broadcastReceived(await message.read()) });
  try {
    const answer = await client.send(channel, Buffer.from('ping'), { timeoutMs: 10000 });
    assert.strictEqual(answer.toString(), 'echo:ping');
    const summary = await client.broadcast(channel, 'news', { timeoutMs: 10000 });
    assert.strictEqual(summary.delivered, 1);
    assert.strictEqual((await broadcastSeen).toString(), 'news');
    const list = await client.listPeers(channel);
    assert.deepStrictEqual(list.peers, [responder.peerId]);
    const watch = client.watchPeers(channel, { timeoutMs: 10000 });
    const first = await watch[Symbol.asyncIterator]().next();
    watch.cancel();
    assert.strictEqual(first.value.kind, 'SNAPSHOT');
    assert.deepStrictEqual(first.value.peers, [responder.peerId]);
  } finally {
    responder.close();
  }
}

async function main() {
  const server = argument('--server');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-cluster-'));
  try {
    const etcd = await startEtcd(path.join(dir, 'etcd'));
    const r1 = await startRelay(server, '127.0.0.1', etcd, 'r1');
    const r2 = await startRelay(server, '127.0.0.2', etcd, 'r2');
    await until('both relays in a cluster of 2',
      async () => (await clusterReady(r1, 2)) && (await clusterReady(r2, 2)));

    const client = new Client(r1.grpc);
    const remote = await channelOn(client, 'r2');
    assert.strictEqual(remote.where.grpcAddress, r2.grpc);
    const local = await channelOn(client, '');

    await exchange(client, remote.channel);
    console.log(`channel on r2 through r1: request, broadcast, presence ok (${remote.where.grpcAddress})`);
    await exchange(client, local.channel);
    console.log('channel on r1: request, broadcast, presence ok');

    // Without locating, r1 carries the calls for the channel r2 serves, and names r2.
    const serving = new Client(r2.grpc, { locate: false });
    const echo = async (request) => Buffer.concat([Buffer.from('echo:'), await request.read()]);
    const responder = await serving.respond(remote.channel, echo);
    const direct = new Client(r1.grpc, { locate: false });
    let carried = await carriedCalls(r1);
    assert.deepStrictEqual((await direct.listPeers(remote.channel)).peers, [responder.peerId]);
    assert.strictEqual((await direct.send(remote.channel, 'x', { timeoutMs: 10000 })).toString(),
      'echo:x');
    assert.strictEqual(await carriedCalls(r1), carried + 2);
    const servedBy = await new Promise((resolve, reject) => {
      const call = direct.stub.ListPeers({ channel: remote.channel }, new grpc.Metadata(), {},
        (error) => { if (error) reject(error); });
      call.on('metadata', (metadata) => resolve(metadata.get('switchboard-served-by')));
    });
    assert.deepStrictEqual(servedBy, [r2.grpc]);
    console.log(`locate off: r1 carries the calls for the channel on r2, served by ${servedBy}`);

    // A call carried already is refused by a relay that does not serve its channel.
    markCarried(direct);
    await assert.rejects(direct.listPeers(remote.channel), (error) => {
      assert(error instanceof SwitchboardError);
      assert.strictEqual(error.code, grpc.status.UNAVAILABLE);
      assert(error.details.startsWith('channel is served by relay r2'), error.details);
      return true;
    });
    await assert.rejects(direct.send(remote.channel, 'x', { timeoutMs: 10000 }),
      (error) => error.code === grpc.status.UNAVAILABLE);
    direct.close();
    console.log('locate off, marked carried: r1 refuses the channel on r2 with UNAVAILABLE');

    // A stale route (r1 for r2's channel): each call is carried, and the route then points at
    // r2, where the next call goes straight (r1 carries no more).
    const stale = new Client(r1.grpc);
    const r2Stub = await stale._stubFor(remote.channel);
    const staleCalls = [
      ['listPeers', () => stale.listPeers(remote.channel)],
      ['send', () => stale.send(remote.channel, 'y', { timeoutMs: 10000 })],
      ['broadcast', () => stale.broadcast(remote.channel, 'z', { timeoutMs: 10000 })],
      ['respond', () => stale.respond(remote.channel, echo)], // closed after the next send
      ['watchPeers', async () => {
        const watch = stale.watchPeers(remote.channel, { timeoutMs: 10000 });
        await watch[Symbol.asyncIterator]().next();
        watch.cancel();
      }],
    ];
    for (const [name, call] of staleCalls) {
      stale._located.set(remote.channel, Promise.resolve(stale.stub));
      carried = await carriedCalls(r1);
      const made = await call();
      assert.strictEqual(await carriedCalls(r1), carried + 1, `${name} carried once`);
      assert.strictEqual(await stale._located.get(remote.channel), r2Stub, `${name}: route r2`);
      assert.strictEqual((await stale.send(remote.channel, 'w', { timeoutMs: 10000 })).toString(),
        'echo:w');
      assert.strictEqual(await carriedCalls(r1), carried + 1, `after ${name}: straight to r2`);
      if (made && typeof made.close === 'function') made.close();
    }
    stale.close();
    console.log('stale route: calls carried by r1, the route then points at r2');

    // Refused on a stale route: the route is forgotten and the next call locates again.
    const refused = new Client(r1.grpc);
    markCarried(refused);
    refused._located.set(remote.channel, Promise.resolve(refused.stub));
    await assert.rejects(refused.send(remote.channel, 'x', { timeoutMs: 10000 }),
      (error) => error.code === grpc.status.UNAVAILABLE &&
        error.details.startsWith('channel is served by relay r2'));
    assert(!refused._located.has(remote.channel));
    assert.strictEqual((await refused.send(remote.channel, 'v', { timeoutMs: 10000 })).toString(),
      'echo:v');
    assert.strictEqual(await refused._located.get(remote.channel), refused._relays.get(r2.grpc));
    refused.close();
    responder.close();
    serving.close();
    console.log('refused on a stale route: located again');

    // r2 leaves: the client, which has r2 cached for the channel, forgets it when r2 cannot be
    // reached (or when r1 says the channel moves) and locates the channel again, now on r1.
    r2.child.kill('SIGTERM');
    await until('r1 alone in the cluster', () => clusterReady(r1, 1));
    let failures = 0;
    await until('the channel of r2 served through r1', async () => {
      try {
        await client.listPeers(remote.channel);
        return true;
      } catch (error) {
        assert.strictEqual(error.code, grpc.status.UNAVAILABLE, error.message);
        failures += 1;
        return false;
      }
    });
    assert((await client.locateChannel(remote.channel)).here);
    console.log(`after r2 left: the channel is served through r1 (${failures} refused call(s) first)`);
    client.close();
  } finally {
    for (const child of processes.reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((resolve) => {
          const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 10000);
          child.on('exit', () => { clearTimeout(timer); resolve(); });
        });
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => {
  console.log('cluster test passed');
}, (error) => {
  console.error(error);
  process.exitCode = 1;
});
