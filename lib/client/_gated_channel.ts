/**
 * A {@linkcode MessageChannel} wrapper whose reading side can be held: while
 * any hold is active, no further message is taken from the inner channel.
 * Through a mux stream this is end-to-end backpressure (the stream's inbox
 * fills, acks stop, the executor's sends wait, the child blocks on its pipe);
 * a slow reader of one process's output slows its connection, and loses
 * nothing.
 *
 * @module
 */

import type { BinaryLane, MessageChannel } from "../rpc/message_channel.ts";

/** A channel whose consumer can be paused with {@linkcode GatedChannel.hold}. */
export class GatedChannel implements MessageChannel {
  #inner: MessageChannel;
  #holds = 0;
  #gate: PromiseWithResolvers<void> | null = null;
  #ended = false;

  /**
   * Wraps a channel.
   *
   * @param inner The channel read from and written to.
   */
  constructor(inner: MessageChannel) {
    this.#inner = inner;
    inner.closed.then(() => this.#end(), () => this.#end());
  }

  /** Number of active holds. */
  get holds(): number {
    return this.#holds;
  }

  /**
   * Stops taking messages until the returned release function is called.
   *
   * @returns Releases this hold; calling it again does nothing.
   */
  hold(): () => void {
    this.#holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds--;
      if (this.#holds === 0) this.#open();
    };
  }

  #open(): void {
    const gate = this.#gate;
    this.#gate = null;
    gate?.resolve();
  }

  #end(): void {
    this.#ended = true;
    this.#open();
  }

  /** Sends through the inner channel. */
  send(message: string): Promise<void> {
    return this.#inner.send(message);
  }

  /** Closes the inner channel and opens the gate. */
  close(reason?: string): Promise<void> {
    this.#end();
    return this.#inner.close(reason);
  }

  /** Settles when the inner channel closes. */
  get closed(): Promise<void> {
    return this.#inner.closed;
  }

  /** The inner channel's binary lane, its messages held like the text ones. */
  get binary(): BinaryLane | undefined {
    const inner = this.#inner.binary;
    if (inner === undefined) return undefined;
    return {
      send: (message) => inner.send(message),
      messages: () => ({ [Symbol.asyncIterator]: () => this.#gated(inner.messages()) }),
      ...(inner.invalidTextAsBytes === undefined
        ? {}
        : { invalidTextAsBytes: inner.invalidTextAsBytes }),
    };
  }

  /** Yields the inner channel's messages, waiting while held. */
  [Symbol.asyncIterator](): AsyncIterator<string> {
    return this.#gated(this.#inner);
  }

  async *#gated<T>(source: AsyncIterable<T>): AsyncGenerator<T> {
    const iterator = source[Symbol.asyncIterator]();
    while (true) {
      while (this.#holds > 0 && !this.#ended) {
        this.#gate ??= Promise.withResolvers<void>();
        await this.#gate.promise;
      }
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  }
}
