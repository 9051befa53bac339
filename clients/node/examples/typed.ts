// The client from TypeScript: one program that joins a channel as an upper-casing responder,
// sends it a request, broadcasts to the channel, watches and lists its members.
//   tsc --strict examples/typed.ts && node examples/typed.js [--server HOST:PORT] [--channel ID]
import { randomUUID } from 'crypto';
import {
  ApplicationError,
  type ChannelLocation,
  Client,
  DEFAULT_TARGET,
  type Incoming,
  type PresenceUpdate,
  type Responder,
  SwitchboardError,
} from 'switchboard-client';

function option(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : undefined;
}

async function upperCase(request: Incoming): Promise<Buffer> {
  if (request.metadata.fail === 'yes') throw new ApplicationError(42, 'asked to fail');
  const body = await request.read();
  return Buffer.from(body.toString('utf8').toUpperCase());
}

async function main(): Promise<void> {
  const client = new Client(option('server') ?? process.env.SWITCHBOARD_GRPC ?? DEFAULT_TARGET);
  const channel = option('channel') ?? randomUUID();

  const session: Responder = await client.respond(channel, upperCase, {
    onBroadcast: async (message: Incoming) => {
      console.log(`broadcast received: ${(await message.read()).toString()}`);
    },
  });
  console.log(`joined ${channel} as ${session.peerId}`);

  const answer: Buffer = await client.send(channel, 'hello from typescript', { timeoutMs: 5000 });
  console.log(`answer: ${answer.toString()}`);

  try {
    await client.send(channel, 'x', { metadata: { fail: 'yes' }, timeoutMs: 5000 });
  } catch (error) {
    if (!(error instanceof SwitchboardError)) throw error;
    console.log(`failed as asked: status=${error.status} appCode=${error.appCode}`);
  }

  const watch = client.watchPeers(channel);
  const seen: PresenceUpdate[] = [];
  for await (const update of watch) {
    seen.push(update);
    if (update.kind === 'SNAPSHOT') break;
  }
  watch.cancel();
  console.log(`watch: ${seen.map((u) => `${u.kind} ${u.peers.length}`).join(', ')}`);

  const { delivered, dropped } = await client.broadcast(channel, 'to every peer', { timeoutMs: 5000 });
  console.log(`broadcast: delivered=${delivered} dropped=${dropped}`);

  const { peers, version } = await client.listPeers(channel);
  console.log(`peers: ${peers.length} version ${version}`);

  // Where the channel is served (a relay alone, or one without Locate, answers `here`).
  const where: ChannelLocation = await client.locateChannel(channel);
  console.log(where.here ? 'served here' : `served by ${where.nodeId} at ${where.grpcAddress}`);

  session.close();
  client.close();
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
