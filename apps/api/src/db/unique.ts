/** A Postgres unique_violation (23505), as node-postgres or PGlite report it (possibly wrapped by drizzle). */
export function isUniqueViolation(e: unknown): boolean {
  for (let x: unknown = e, depth = 0; x && depth < 5; x = (x as { cause?: unknown }).cause, depth++) {
    if ((x as { code?: unknown }).code === '23505') return true;
  }
  return false;
}
