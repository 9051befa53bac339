// The ES module entry point of switchboard-client: the CommonJS API of index.js, re-exported
// by name (import { Client } from 'switchboard-client') and as the default export.
import api from './index.js';

export const {
  ApplicationError,
  CHUNK_SIZE,
  Client,
  DEFAULT_TARGET,
  Incoming,
  LOADER_OPTIONS,
  PeerWatch,
  Responder,
  SendCall,
  StreamReset,
  SwitchboardError,
  STATUS_NAMES,
  grpc,
  proto,
  packageDefinition,
} = api;

export default api;
