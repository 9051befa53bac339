// Type declarations of the ES module entry point (index.mjs): the same API as index.d.ts, by
// name and as the default export.
import * as api from './index.js';

export * from './index.js';
export default api;
