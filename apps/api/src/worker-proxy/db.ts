// The database handle the routing modules use: the API's shared one (a real server or PGlite).
export type { Db } from '../db/client.js';
