/**
 * The one abstraction every JSON-RPC session rides on: a bidirectional,
 * ordered, reliable channel of whole messages. A local WebSocket connection,
 * a virtual stream of the mux, and a test pipe all satisfy it structurally.
 *
 * @module
 */

/** An ordered, reliable channel of whole text messages (one JSON-RPC message each). */
export interface MessageChannel extends AsyncIterable<string> {
  /**
   * Sends one whole message. Resolves once the transport has accepted it
   * (this is where backpressure is felt); rejects once the channel is closed.
   */
  send(message: string): Promise<void>;
  /** Closes the channel; idempotent. Pending sends and reads end. */
  close(reason?: string): Promise<void>;
  /** Settles once the channel is closed, by either side or by its transport. */
  readonly closed: Promise<void>;
}
