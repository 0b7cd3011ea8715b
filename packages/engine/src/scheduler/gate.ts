// Adapter residency as the scheduler sees it. Which adapters sit in the engine's LoRA slots is the
// owner's policy (the worker's AdapterManager: tiers, LRU eviction, drains; Engine.generate: the
// adapters loaded by hand). The scheduler only asks whether an adapter may be admitted and pins it
// for every running sequence, so the distinct adapters of a step never exceed the slots.
export interface AdapterGate {
  /** New sequences for this adapter may be admitted now (resident and not draining). */
  admissible(adapter: string): boolean;
  /** Pins the adapter for one admitted sequence; returns its slot. */
  pin(adapter: string): number;
  /** Releases one pin (the sequence finished, failed or was preempted). */
  unpin(adapter: string): void;
  /** Called on every admission round with the adapters that have waiting sequences (to start loads). */
  wanted?(adapters: readonly string[]): void;
}

/** A gate over a fixed set of loaded adapters: admissible while loaded, never pinned (the caller holds them). */
export function loadedAdaptersGate(slotOf: (adapter: string) => number | undefined): AdapterGate {
  return {
    admissible: (a) => slotOf(a) !== undefined,
    pin: (a) => {
      const slot = slotOf(a);
      if (slot === undefined) throw new Error(`adapter ${a} is not loaded`);
      return slot;
    },
    unpin: () => undefined,
  };
}
