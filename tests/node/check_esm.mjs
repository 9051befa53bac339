// The installed package through import: named exports and the default export are the CommonJS
// API itself, then the scenario against the relay whose gRPC address is argv[2].
import assert from 'assert';
import { createRequire } from 'module';
import { fileURLToPath } from 'url';
import path from 'path';
import api, * as named from 'switchboard-client';
import { Client, SwitchboardError } from 'switchboard-client';

const require = createRequire(import.meta.url);
const { run } = require('./scenario.cjs');
const cjs = require('switchboard-client');

const entry = fileURLToPath(import.meta.resolve('switchboard-client'));
assert.strictEqual(path.basename(entry), 'index.mjs');
assert.strictEqual(api, cjs);
assert.strictEqual(Client, cjs.Client);
assert.strictEqual(SwitchboardError, cjs.SwitchboardError);
const missing = Object.keys(cjs).filter((key) => named[key] !== cjs[key]);
assert.deepStrictEqual(missing, [], `named exports missing: ${missing.join(', ')}`);
console.log(`esm: loaded ${entry}`);
console.log(`esm: ${Object.keys(cjs).length} named exports, the same objects as require() gives`);

// The scenario is given the module namespace, so that every name it uses comes from import.
await run(named, process.argv[2], (line) => console.log(`esm: ${line}`)).catch((error) => {
  console.error(`esm: FAILED: ${error && error.stack}`);
  process.exit(1);
});
console.log('esm: ok');
