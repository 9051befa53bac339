'use strict';
// The installed package through require(): its entry point, its own copy of the contract, then
// the scenario against the relay whose gRPC address is argv[2].
const assert = require('assert');
const path = require('path');
const api = require('switchboard-client');
const { run } = require('./scenario.cjs');

const installed = path.dirname(require.resolve('switchboard-client'));
assert.strictEqual(require.resolve('switchboard-client'), path.join(installed, 'index.js'));
assert.strictEqual(api.LOADER_OPTIONS.includeDirs[0], path.join(installed, 'proto'));
assert.strictEqual(typeof api.Client, 'function');
console.log(`cjs: loaded ${require.resolve('switchboard-client')}`);
console.log(`cjs: contract from ${api.LOADER_OPTIONS.includeDirs[0]}`);

run(api, process.argv[2], (line) => console.log(`cjs: ${line}`)).then(() => {
  console.log('cjs: ok');
}, (error) => {
  console.error(`cjs: FAILED: ${error && error.stack}`);
  process.exit(1);
});
