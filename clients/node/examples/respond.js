#!/usr/bin/env node
'use strict';
// Joins a channel as a responder that upper-cases each request; prints presence and broadcasts.
//   node clients/node/examples/respond.js --channel CHANNEL      (Ctrl-C to leave)
const { ApplicationError, Client } = require('..');

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

async function main() {
  const channel = option('channel');
  if (!channel) throw new Error('usage: respond.js --channel CHANNEL [--peer-id ID] [--server HOST:PORT]');
  const client = new Client(option('server', process.env.SWITCHBOARD_GRPC || '127.0.0.1:7401'));
  // Each request is handled concurrently; returning ends the response with OK.
  const session = await client.respond(channel, async (request) => {
    if (request.metadata.fail) throw new ApplicationError(42, 'asked to fail');
    for await (const chunk of request) await request.write(Buffer.from(chunk.toString('latin1').toUpperCase(), 'latin1'));
  }, {
    peerId: option('peer-id'),
    onPresence: (update) => process.stderr.write(`presence ${update.kind} ${update.peers.join(' ') || '-'} version=${update.version}\n`),
    onBroadcast: async (message) => {
      const body = await message.read();
      process.stderr.write(`broadcast from ${message.sender || 'an anonymous sender'}: ${body.length} bytes\n`);
    },
  });
  process.stderr.write(`ready peer=${session.peerId} channel=${channel}\n`);
  const leave = () => session.close();
  process.on('SIGINT', leave);
  process.on('SIGTERM', leave);
  const error = await session.wait();
  if (error) {
    process.stderr.write(`session ended: ${error.message}\n`);
    process.exitCode = 1;
  }
  client.close();
}

main().catch((error) => {
  process.stderr.write(`${error.message}\n`);
  process.exit(2);
});
