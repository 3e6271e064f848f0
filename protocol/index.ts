export * from './errors.js';
export * from './keys.js';
export * from './registry.js';
export * from './schemas.js';
export * from './signing.js';
export * from './types.js';
