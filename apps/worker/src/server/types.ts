// Hono environment of the worker's app: values middleware hands to handlers.
export interface WorkerEnv {
  Variables: {
    /** The parsed JSON body (parseJsonBody). */
    body: unknown;
    /** Adapter label for request metrics, set by the route once the model is resolved. */
    adapterLabel: string;
  };
}
