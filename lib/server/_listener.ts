/**
 * A `Deno.serve` listener that outlives running out of file descriptors, for
 * both servers (the rendezvous and `serve`).
 *
 * Deno.serve (2.9) ends its accept loop at the first failed accept (`Too many
 * open files`) while the connections it holds go on being served. This
 * reports a `listener_failed` event and listens again on the same address
 * (100 ms doubling to 2 s) until it can, then reports `accepting_again` with
 * the first request a new listener gets.
 *
 * @module
 */

/** First wait before listening again after the listener failed; it doubles up to the maximum. */
const RELISTEN_FIRST_DELAY_MS = 100;
/** Longest wait between attempts to listen again. */
const RELISTEN_MAX_DELAY_MS = 2_000;

/** The listener failing and coming back, as a server reports it. */
export type ListenerEvent =
  | {
    /**
     * The listener stopped accepting connections (Deno.serve ends its accept
     * loop on a failed accept, such as `Too many open files`), or an attempt
     * to listen again failed for a new reason (reported once per outage and
     * reason). Open connections are still served; the next attempt to listen
     * again follows after `retryInMs`.
     */
    type: "listener_failed";
    /** Why, e.g. `Too many open files (os error 24)`. */
    message: string;
    /** Milliseconds until the next attempt to listen again. */
    retryInMs: number;
  }
  | {
    /**
     * After `listener_failed`: a listener started since then accepted a
     * connection and got a request (reported with that first request).
     */
    type: "accepting_again";
    /** Milliseconds from the failure to that request. */
    downMs: number;
    /** Attempts to listen again it took. */
    attempts: number;
  };

/** What {@linkcode Listener} needs: where, what to serve, and where to report. */
export interface ListenerOptions {
  hostname: string;
  port: number;
  handler: (request: Request) => Response | Promise<Response>;
  /** Answers a request the handler threw on (Deno's own prints the stack). */
  onError?: (error: unknown) => Response | Promise<Response>;
  /** Receives the listener's failures and recoveries; must not throw. */
  onEvent: (event: ListenerEvent) => void;
}

let signalHandlingReady = false;

/**
 * Sets up Deno's signal handling now, while file descriptors are to be had.
 * Deno 2.9 sets it up on first use (a self-pipe) and panics when that fails:
 * a plain Deno.serve process with no signal listener that listened again
 * during descriptor exhaustion aborted in `ext/signals` (measured with Deno
 * 2.9.6); the same process with its signal handling set up beforehand did not.
 */
function readySignalHandling(): void {
  if (signalHandlingReady || Deno.build.os === "windows") return;
  signalHandlingReady = true;
  const ignore = (): void => {};
  try {
    // SIGWINCH's default action is to ignore it, as is done with no listener left.
    Deno.addSignalListener("SIGWINCH", ignore);
    Deno.removeSignalListener("SIGWINCH", ignore);
  } catch {
    // No signals here: nothing to set up.
  }
}

function messageOf(error: unknown): string {
  // Deno.serve wraps the accept error: "Error: Too many open files (os error 24)".
  return (error instanceof Error ? error.message : String(error)).replace(/^Error: /, "");
}

/**
 * Listens with `Deno.serve`, and listens again on the same address whenever
 * the listener stops accepting until {@linkcode Listener.close}.
 */
export class Listener {
  /** The address listened on (a port 0 resolved), kept when listening again. */
  readonly addr: Deno.NetAddr;
  #options: ListenerOptions;
  /**
   * Every listener started, the failed ones too: Deno keeps serving the
   * connections a failed listener accepted until it is shut down.
   */
  #servers = new Set<Deno.HttpServer<Deno.NetAddr>>();
  /** Listeners started so far, and which of them accepts connections (0: none). */
  #generations = 0;
  #accepting = 0;
  #closing: Promise<void> | undefined;
  #relistenTimer: ReturnType<typeof setTimeout> | undefined;
  #relistenDelay = RELISTEN_FIRST_DELAY_MS;
  /** Set from the listener's failure until the newest listener serves a request. */
  #outage: { since: number; attempts: number; message: string } | undefined;

  /**
   * Starts listening.
   *
   * @param options Address, handler and event sink.
   * @throws {Deno.errors.AddrInUse} When the port is taken (and what else `Deno.serve` throws).
   */
  constructor(options: ListenerOptions) {
    this.#options = options;
    readySignalHandling();
    this.addr = this.#listen(options.hostname, options.port).addr;
  }

  #listen(hostname: string, port: number): Deno.HttpServer<Deno.NetAddr> {
    const generation = ++this.#generations;
    const { handler, onError } = this.#options;
    const server = Deno.serve({
      hostname,
      port,
      onListen: () => {},
      ...(onError ? { onError } : {}),
      handler: (request) => {
        // A request on the listener started since: it accepts connections
        // again. (A failed one still serves requests on the connections it had.)
        if (this.#outage !== undefined && generation === this.#accepting) this.#acceptingAgain();
        return handler(request);
      },
    });
    this.#accepting = generation;
    this.#servers.add(server);
    const ended = (error: unknown): void => {
      if (this.#closing === undefined && generation === this.#accepting) {
        this.#accepting = 0;
        this.#failed(error ?? new Error("the listener stopped"));
      }
    };
    server.finished.then(() => ended(undefined), ended);
    return server;
  }

  /** The newest listener stopped, or listening again failed: try again later. */
  #failed(error: unknown): void {
    const message = messageOf(error);
    if (this.#outage === undefined) {
      this.#outage = { since: performance.now(), attempts: 0, message };
      this.#relistenDelay = RELISTEN_FIRST_DELAY_MS;
      this.#options.onEvent({ type: "listener_failed", message, retryInMs: this.#relistenDelay });
    } else if (message !== this.#outage.message) {
      // One report per outage and reason, not one per attempt.
      this.#outage.message = message;
      this.#options.onEvent({ type: "listener_failed", message, retryInMs: this.#relistenDelay });
    }
    this.#relistenTimer = setTimeout(() => this.#relisten(), this.#relistenDelay);
  }

  #relisten(): void {
    this.#relistenTimer = undefined;
    if (this.#closing !== undefined || this.#outage === undefined) return;
    this.#outage.attempts++;
    // Doubled whatever comes of it: a new listener that fails again at once
    // (every descriptor still taken) makes the next attempt wait longer.
    this.#relistenDelay = Math.min(this.#relistenDelay * 2, RELISTEN_MAX_DELAY_MS);
    try {
      this.#listen(this.addr.hostname, this.addr.port);
    } catch (error) {
      // Still out of descriptors, or the port was taken meanwhile.
      this.#failed(error);
    }
  }

  #acceptingAgain(): void {
    const { since, attempts } = this.#outage!;
    this.#outage = undefined;
    this.#relistenDelay = RELISTEN_FIRST_DELAY_MS;
    this.#options.onEvent({
      type: "accepting_again",
      downMs: Math.round(performance.now() - since),
      attempts,
    });
  }

  /**
   * Stops listening and shuts down every listener started (the connections
   * they serve end with them). Idempotent.
   *
   * @returns Once every listener has finished.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearTimeout(this.#relistenTimer);
      this.#relistenTimer = undefined;
      await Promise.all([...this.#servers].map(async (server) => {
        await server.shutdown().catch(() => {});
        // A failed listener's `finished` rejected already; it was reported then.
        await server.finished.catch(() => {});
      }));
    })();
    return this.#closing;
  }
}
