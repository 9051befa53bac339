'use strict';
// The Node client against a real two-relay cluster (etcd + two relays on loopback): pointed at
// relay r1 only, it locates each channel and makes its calls to the relay that serves it; with
// locating off, r1 refuses a channel r2 serves; after r2 leaves, the client finds r1 again.
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

    // Without locating, r1 refuses the channel r2 serves, saying where it is.
    const direct = new Client(r1.grpc, { locate: false });
    await assert.rejects(direct.listPeers(remote.channel), (error) => {
      assert(error instanceof SwitchboardError);
      assert.strictEqual(error.code, grpc.status.UNAVAILABLE);
      assert(error.details.startsWith('channel is served by relay r2'), error.details);
      return true;
    });
    await assert.rejects(direct.send(remote.channel, 'x', { timeoutMs: 10000 }),
      (error) => error.code === grpc.status.UNAVAILABLE);
    direct.close();
    console.log('locate off: r1 refuses the channel on r2 with UNAVAILABLE');

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
