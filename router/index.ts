export * from './balancer.js';
export * from './hash.js';
export * from './placement.js';
export * from './quorums.js';
export * from './route-table.js';
export * from './vnode-ring.js';
