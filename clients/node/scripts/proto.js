#!/usr/bin/env node
'use strict';
// Puts the gRPC contract into the package for `npm pack` (copy) and takes it out again (clean):
// in the source tree the client reads the repository's proto/, the one source of truth.
const fs = require('fs');
const path = require('path');

const PROTO_FILE = path.join('switchboard', 'v1', 'switchboard.proto');
const packageDir = path.resolve(__dirname, '..');
const source = path.resolve(packageDir, '..', '..', 'proto', PROTO_FILE);
const copyDir = path.join(packageDir, 'proto');

switch (process.argv[2]) {
  case 'copy':
    if (!fs.existsSync(source)) {
      process.stderr.write(`proto.js: ${source} not found (pack from the repository)\n`);
      process.exit(1);
    }
    fs.rmSync(copyDir, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(path.join(copyDir, PROTO_FILE)), { recursive: true });
    fs.copyFileSync(source, path.join(copyDir, PROTO_FILE));
    break;
  case 'clean':
    fs.rmSync(copyDir, { recursive: true, force: true });
    break;
  default:
    process.stderr.write('usage: proto.js copy|clean\n');
    process.exit(2);
}
