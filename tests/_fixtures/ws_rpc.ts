/**
 * A plain WebSocket JSON-RPC client for integration tests: one text message
 * per JSON-RPC message, like any third-party client would speak to
 * `outpost serve`. Every wait has a deadline.
 *
 * @module
 */

import { withDeadline } from "../_support/deadline.ts";

/** A reply or notification as received. */
export interface Message {
  jsonrpc?: string;
  id?: string | number | null;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { code: number; message: string; data?: unknown };
}

/** One connection. */
export class WsRpc implements AsyncDisposable {
  #ws: WebSocket;
  #nextId = 1;
  #replies = new Map<string | number, PromiseWithResolvers<Message>>();
  #waiters: { match: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];
  /** Notifications and id-null errors, in arrival order. */
  readonly received: Message[] = [];
  /** Settles when the socket has closed. */
  readonly closed: Promise<CloseEvent>;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
    ws.addEventListener("message", (event) => {
      const message = JSON.parse(event.data as string) as Message;
      const reply = message.id !== undefined && message.id !== null
        ? this.#replies.get(message.id)
        : undefined;
      if (reply) {
        this.#replies.delete(message.id!);
        reply.resolve(message);
        return;
      }
      this.received.push(message);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.match(message)) return true;
        w.resolve(message);
        return false;
      });
    });
  }

  /**
   * Opens a connection.
   *
   * @param url The server URL.
   * @param headers Handshake headers.
   * @returns The connection.
   */
  static async open(url: string, headers?: HeadersInit): Promise<WsRpc> {
    const ws = new WebSocket(url, headers ? { headers } : undefined);
    const rpc = new WsRpc(ws);
    const opened = new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error("Cannot open WebSocket")), {
        once: true,
      });
    });
    await withDeadline(opened, 5_000, "WebSocket open");
    return rpc;
  }

  /** Sends raw text. */
  send(text: string | Uint8Array): void {
    this.#ws.send(text);
  }

  /**
   * Sends a request and awaits the reply (result or error).
   *
   * @param method The method.
   * @param params The params.
   * @param ms The deadline.
   * @returns The reply.
   */
  request(method: string, params?: unknown, ms = 5_000): Promise<Message> {
    const id = this.#nextId++;
    const reply = Promise.withResolvers<Message>();
    this.#replies.set(id, reply);
    this.#ws.send(JSON.stringify(params === undefined ? { id, method } : { id, method, params }));
    return withDeadline(reply.promise, ms, `reply to ${method}`);
  }

  /**
   * Sends a request and returns its result, failing on an error reply.
   *
   * @param method The method.
   * @param params The params.
   * @param ms The deadline.
   * @returns The result.
   */
  async call(method: string, params?: unknown, ms = 5_000): Promise<Record<string, unknown>> {
    const reply = await this.request(method, params, ms);
    if (reply.error) {
      throw new Error(`${method} failed: ${reply.error.code} ${reply.error.message}`);
    }
    return reply.result!;
  }

  /** Sends a notification. */
  notify(method: string, params?: unknown): void {
    this.#ws.send(JSON.stringify(params === undefined ? { method } : { method, params }));
  }

  /**
   * Awaits a received message (notification or id-null error) matching `match`,
   * including ones that already arrived.
   *
   * @param match The predicate.
   * @param ms The deadline.
   * @returns The message.
   */
  waitFor(match: (m: Message) => boolean, ms = 5_000): Promise<Message> {
    const seen = this.received.find(match);
    if (seen) return Promise.resolve(seen);
    const { promise, resolve } = Promise.withResolvers<Message>();
    this.#waiters.push({ match, resolve });
    return withDeadline(promise, ms, "notification");
  }

  /** Initializes and sends `initialized`; returns the session id. */
  async initialize(params: Record<string, unknown> = {}): Promise<string> {
    const result = await this.call("initialize", { clientName: "test", ...params });
    this.notify("initialized");
    return result.sessionId as string;
  }

  /** Closes the socket and waits for the close. */
  async close(): Promise<void> {
    if (this.#ws.readyState !== WebSocket.CLOSED) this.#ws.close();
    await withDeadline(this.closed, 5_000, "WebSocket close");
  }

  /** Same as close. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Decodes a base64 chunk to text. */
export function text(base64: unknown): string {
  return new TextDecoder().decode(Uint8Array.fromBase64(base64 as string));
}
