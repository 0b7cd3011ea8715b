export { type Clock, ManualClock, monotonicClock, systemClock } from './clock.js';
export { type Evicted, Lru, type LruOptions } from './lru.js';
