#!/usr/bin/env node
'use strict';
// Broadcasts stdin to every other peer of a channel and prints the delivery summary.
//   echo "hello all" | node clients/node/examples/broadcast.js --channel CHANNEL
const { Client } = require('..');

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

async function main() {
  const channel = option('channel');
  if (!channel) throw new Error('usage: broadcast.js --channel CHANNEL [--server HOST:PORT]');
  const client = new Client(option('server', process.env.SWITCHBOARD_GRPC || '127.0.0.1:7401'));
  const { delivered, dropped } = await client.broadcast(channel, process.stdin);
  process.stderr.write(`delivered=${delivered} dropped=${dropped}\n`);
  client.close();
}

main().catch((error) => {
  process.stderr.write(`broadcast failed: ${error.message}\n`);
  process.exit(1);
});
