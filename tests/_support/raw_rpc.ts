/**
 * A deliberately dumb JSON-RPC client over a raw WebSocket (one text message
 * per JSON-RPC message, the local transport), able to send anything at all:
 * malformed JSON, wrong types, huge or deeply nested messages. The bad-input
 * tests use it to speak to a real local server.
 *
 * @module
 */

import { withDeadline } from "./deadline.ts";

/** A JSON-RPC error object. */
export interface RawRpcError {
  /** The code. */
  code: number;
  /** The message. */
  message: string;
  /** Optional data. */
  data?: unknown;
}

/** A JSON-RPC response as received. */
export interface RawResponse {
  /** The id, as echoed (null for unparseable requests). */
  id: unknown;
  /** The result on success. */
  result?: unknown;
  /** The error on failure. */
  error?: RawRpcError;
}

/** One raw JSON-RPC connection. */
export class RawRpc implements AsyncDisposable {
  #ws: WebSocket;
  #nextId = 1;
  #waiting = new Map<string, (r: RawResponse) => void>();
  #orphans: RawResponse[] = [];
  #orphanWaiters: ((r: RawResponse) => void)[] = [];
  #closed: Promise<CloseEvent>;
  /** Notifications received, in order. */
  readonly notifications: { method: string; params: unknown }[] = [];
  /** Messages that were not valid JSON (should be none). */
  readonly garbage: string[] = [];

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.#closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
    ws.addEventListener("message", (ev) => this.#onMessage(ev.data));
  }

  /**
   * Opens a connection.
   *
   * @param url The server's ws URL.
   * @param headers Handshake headers (e.g. a bearer token).
   * @returns The open connection.
   */
  static async open(url: string, headers?: HeadersInit): Promise<RawRpc> {
    const ws = new WebSocket(url, { headers });
    await withDeadline(
      new Promise<void>((resolve, reject) => {
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("close", (e) => reject(new Error(`Cannot open: closed ${e.code}`)), {
          once: true,
        });
      }),
      5000,
      "raw rpc open",
    );
    return new RawRpc(ws);
  }

  /** Resolves when the socket has closed. */
  get closed(): Promise<CloseEvent> {
    return this.#closed;
  }

  /** Whether the socket is open. */
  get open(): boolean {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  #onMessage(data: unknown): void {
    if (typeof data !== "string") {
      this.garbage.push(`binary message`);
      return;
    }
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(data);
    } catch {
      this.garbage.push(data.slice(0, 200));
      return;
    }
    if (typeof msg.method === "string" && !("id" in msg)) {
      this.notifications.push({ method: msg.method, params: msg.params });
      return;
    }
    const response = msg as unknown as RawResponse;
    const key = JSON.stringify(response.id);
    const waiter = this.#waiting.get(key);
    if (waiter !== undefined) {
      this.#waiting.delete(key);
      waiter(response);
      return;
    }
    const orphanWaiter = this.#orphanWaiters.shift();
    if (orphanWaiter !== undefined) orphanWaiter(response);
    else this.#orphans.push(response);
  }

  /**
   * Sends raw text as one message.
   *
   * @param text Anything.
   */
  sendText(text: string): void {
    this.#ws.send(text);
  }

  /**
   * Sends raw text and waits for a response whose id is not one of ours
   * (e.g. id null for an unparseable message).
   *
   * @param text Anything.
   * @param ms Deadline.
   * @returns The response.
   */
  sendRawExpectingReply(text: string, ms = 5000): Promise<RawResponse> {
    const reply = this.#orphans.length > 0
      ? Promise.resolve(this.#orphans.shift()!)
      : new Promise<RawResponse>((resolve) => this.#orphanWaiters.push(resolve));
    this.#ws.send(text);
    return withDeadline(reply, ms, "reply to a raw message");
  }

  /**
   * Sends a request with the given params (any JSON value, or omitted) and
   * waits for its response.
   *
   * @param method The method.
   * @param params The params; `undefined` omits the member.
   * @param ms Deadline.
   * @param id Use this id instead of a fresh one.
   * @returns The response.
   */
  request(method: unknown, params?: unknown, ms = 5000, id?: unknown): Promise<RawResponse> {
    const theId = id ?? this.#nextId++;
    const message: Record<string, unknown> = { jsonrpc: "2.0", id: theId, method };
    if (params !== undefined) message.params = params;
    const reply = new Promise<RawResponse>((resolve) =>
      this.#waiting.set(JSON.stringify(theId), resolve)
    );
    this.#ws.send(JSON.stringify(message));
    return withDeadline(reply, ms, `reply to ${String(method).slice(0, 40)}`).finally(() =>
      this.#waiting.delete(JSON.stringify(theId))
    );
  }

  /**
   * Sends a request and returns its result, failing on an error reply.
   *
   * @param method The method.
   * @param params The params.
   * @param ms Deadline.
   * @returns The result.
   */
  async call(method: string, params?: unknown, ms = 5000): Promise<unknown> {
    const r = await this.request(method, params, ms);
    if (r.error) throw new Error(`${method} failed: ${r.error.code} ${r.error.message}`);
    return r.result;
  }

  /**
   * Sends a notification.
   *
   * @param method The method.
   * @param params The params.
   */
  notify(method: string, params?: unknown): void {
    const message: Record<string, unknown> = { jsonrpc: "2.0", method };
    if (params !== undefined) message.params = params;
    this.#ws.send(JSON.stringify(message));
  }

  /**
   * Closes the socket and waits for it.
   *
   * @returns When closed.
   */
  async close(): Promise<void> {
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) {
      this.#ws.close();
    }
    await withDeadline(this.#closed, 5000, "raw rpc close");
  }

  /** Closes the socket. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
