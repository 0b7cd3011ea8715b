// Routing affinity (issue 11): two real workers, 50 tenant adapters, Zipf traffic from 16 clients.
// Routing on engine slots apart from the host tier needs at least 3x fewer slot loads per request
// than routing that counted the host tier as resident (which let load spreading copy every adapter
// onto every worker), while both workers keep a fair share of the traffic.
import { describe, expect, it } from 'vitest';
import { runAffinitySoak } from './helpers/affinity-soak.js';

describe('routing affinity with two workers', () => {
  it('needs at least 3x fewer slot loads per request than counting the host tier as resident', async () => {
    const common = {
      workers: 2,
      adapters: 50,
      slots: 32,
      concurrency: 16,
      settle: 300,
      requests: 600,
      heartbeatEvery: 20,
      seed: 11,
    };
    const before = await runAffinitySoak({ ...common, mode: 'host-as-slot' });
    const after = await runAffinitySoak({ ...common, mode: 'split' });
    console.log(
      `[affinity] slot loads/request: host tier as resident ${before.loadsPerRequest.toFixed(3)} (${before.slotLoads}/${before.requests}, ${before.workersPerAdapter.toFixed(2)} workers per adapter); ` +
        `slots apart ${after.loadsPerRequest.toFixed(3)} (${after.slotLoads}/${after.requests}, ${after.workersPerAdapter.toFixed(2)} workers per adapter); requests per worker ${after.perWorker.join('/')}`,
    );
    expect(after.loadsPerRequest * 3).toBeLessThanOrEqual(before.loadsPerRequest);
    expect(after.workersPerAdapter).toBeLessThan(before.workersPerAdapter);
    // No herding: rendezvous spreads adapters, so each worker serves a fair share.
    for (const n of after.perWorker) expect(n).toBeGreaterThan(after.requests * 0.3);
  }, 180_000);
});
