/**
 * An in-memory pair of connected message channels, for tests of code that
 * speaks over a `MessageChannel` (the far side of the boundary).
 *
 * @module
 */

import type { MessageChannel } from "../../lib/rpc/message_channel.ts";

class End implements MessageChannel {
  #queue: string[] = [];
  #waiter: PromiseWithResolvers<void> | null = null;
  #done = false;
  #closed = Promise.withResolvers<void>();
  peer!: End;
  /** Every message sent by this end, in order. */
  sent: string[] = [];
  /** The reason this end was closed with, if it closed the pair with one. */
  closeReason: string | undefined;

  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  send(message: string): Promise<void> {
    if (this.#done) return Promise.reject(new Error("Cannot send: channel closed"));
    this.sent.push(message);
    this.peer.#push(message);
    return Promise.resolve();
  }

  #push(message: string): void {
    if (this.#done) return;
    this.#queue.push(message);
    this.#waiter?.resolve();
  }

  #end(): void {
    if (this.#done) return;
    this.#done = true;
    this.#waiter?.resolve();
    this.#closed.resolve();
  }

  close(reason?: string): Promise<void> {
    if (!this.#done) this.closeReason = reason;
    this.#end();
    this.peer.#end();
    return Promise.resolve();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    while (true) {
      if (this.#queue.length > 0) {
        yield this.#queue.shift()!;
        continue;
      }
      if (this.#done) return;
      this.#waiter = Promise.withResolvers<void>();
      await this.#waiter.promise;
      this.#waiter = null;
    }
  }
}

/**
 * Creates two connected channels: what one sends, the other yields.
 *
 * @returns The two ends.
 */
export function channelPair(): [End, End] {
  const a = new End();
  const b = new End();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

/**
 * Reads the next message of a channel iterator as parsed JSON.
 *
 * @param iterator The iterator of the channel.
 * @returns The parsed message.
 */
export async function nextJson(iterator: AsyncIterator<string>): Promise<Record<string, unknown>> {
  const { value, done } = await iterator.next();
  if (done) throw new Error("Cannot read message: channel closed");
  return JSON.parse(value);
}
