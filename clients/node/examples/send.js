#!/usr/bin/env node
'use strict';
// Sends stdin as a request to a channel and writes the response to stdout.
//   echo hello | node clients/node/examples/send.js --channel CHANNEL [--to PEER] [--timeout-ms 5000]
const { Client, SwitchboardError } = require('..');

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

async function main() {
  const channel = option('channel');
  if (!channel) throw new Error('usage: send.js --channel CHANNEL [--to PEER] [--timeout-ms MS] [--server HOST:PORT]');
  const client = new Client(option('server', process.env.SWITCHBOARD_GRPC || '127.0.0.1:7401'));
  const timeout = option('timeout-ms');
  const call = client.openSend(channel, {
    target: option('to'),
    timeoutMs: timeout === undefined ? undefined : Number(timeout),
  });
  // Full duplex: stdin streams out while the response streams to stdout.
  const writing = call.writeAll(process.stdin);
  try {
    for await (const chunk of call) {
      if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once('drain', resolve));
    }
  } catch (error) {
    if (!(error instanceof SwitchboardError)) throw error;
    process.stderr.write(`send failed: ${error.message} (gRPC ${error.codeName})\n`);
    process.exitCode = 1;
  }
  await writing.catch(() => {});
  process.stdin.destroy();
  client.close();
}

main().catch((error) => {
  process.stderr.write(`${error.message}\n`);
  process.exit(2);
});
