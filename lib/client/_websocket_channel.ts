/**
 * A {@linkcode MessageChannel} over one client WebSocket where each text
 * message is one JSON-RPC message (Codex's local transport, `outpost serve`).
 *
 * @module
 */

import { RelayClosedError } from "../errors.ts";
import { printableUrl } from "../_userinfo.ts";
import { TcpWebSocket, upgradeRefusal } from "../relay/_tcp_websocket.ts";
import type { BinaryLane, MessageChannel } from "../rpc/message_channel.ts";

/** Options of {@linkcode openWebSocketChannel}. */
export interface WebSocketChannelOptions {
  /** Bearer token sent in the Authorization header. */
  token?: string;
  /** Cancels the connect. */
  signal?: AbortSignal;
  /** Connect timeout. @default {10000} */
  timeoutMs?: number;
  /**
   * Most received messages queued unread; past it the socket is closed. With
   * the `"tcp"` transport reading pauses instead (at 4,096, or half this
   * bound if less). @default {65536}
   */
  maxInboxMessages?: number;
  /**
   * Most received characters queued unread (bytes, for JSON-RPC text);
   * past it the socket is closed, and a single larger message closes it
   * too. With the `"tcp"` transport reading pauses instead, at 1 MiB (or
   * half this bound if less), and goes on at half that: the inbox then holds
   * at most the pause point plus one message. @default {134217728}
   */
  maxInboxChars?: number;
  /** Sends wait while the socket buffers more than this many bytes. @default {4194304} */
  highWaterMark?: number;
  /**
   * How to dial: `"tcp"` is outpost's own WebSocket client with `TCP_NODELAY`
   * set; `"native"` is Deno's built-in `WebSocket`, which leaves Nagle's
   * algorithm on, so a small message sent right after another (`initialized`
   * then `process/start`, say) waits for the server's delayed ACK, about
   * 40 ms. @default {"tcp"}
   */
  transport?: "tcp" | "native";
  /**
   * With the `"tcp"` transport: nothing received for this long (a ping goes
   * out halfway) closes the channel as lost. 0 turns the check off. @default {30000}
   */
  idleTimeoutMs?: number;
}

const NORMAL_CLOSURE = 1000;
// A client may only close with 1000 or 3000..4999: 4000 + the matching 10xx code.
const UNSUPPORTED_DATA = 4003;
const MESSAGE_TOO_BIG = 4009;
/** Largest message received (the executor's default JSON-RPC limit is 16 MiB). */
const MAX_RECEIVED_MESSAGE_BYTES = 64 * 1024 * 1024;
/** How often a waiting send looks at `bufferedAmount` again, in milliseconds. */
const DRAIN_POLL_MS = 2;
/**
 * Unread received characters at which reading from a socket that can pause
 * (outpost's own client) stops, and the server's sends wait (down to the
 * executor's reading of the program's output). It starts again at half.
 */
const PAUSE_INBOX_CHARS = 1024 * 1024;
/** Unread received messages at which reading pauses likewise. */
const PAUSE_INBOX_MESSAGES = 4096;

/** A WebSocket adapted to {@linkcode MessageChannel}. */
export class WebSocketChannel implements MessageChannel {
  #socket: WebSocket;
  #inbox: (string | Uint8Array)[] = [];
  #waiter: ((done: boolean) => void) | null = null;
  #ended = false;
  #closeReason: string | undefined;
  #highWaterMark: number;
  #maxInbox: number;
  #maxInboxChars: number;
  #inboxChars = 0;
  /** True once read through `binary.messages()`: binary messages are then queued, not refused. */
  #binaryIterated = false;
  #closed: Promise<void>;
  /** The socket, when it can stop reading (backpressure); null for Deno's built-in one. */
  #pausable: TcpWebSocket | null;
  #paused = false;
  #pauseChars: number;
  #pauseMessages: number;
  #sendQueue: Promise<void> = Promise.resolve();
  #waitingSends = 0;

  constructor(socket: WebSocket, options: WebSocketChannelOptions) {
    this.#socket = socket;
    this.#highWaterMark = options.highWaterMark ?? 4 * 1024 * 1024;
    this.#maxInbox = options.maxInboxMessages ?? 65_536;
    this.#maxInboxChars = options.maxInboxChars ?? 128 * 1024 * 1024;
    this.#pausable = socket instanceof TcpWebSocket ? socket : null;
    this.#pauseChars = Math.min(PAUSE_INBOX_CHARS, Math.floor(this.#maxInboxChars / 2));
    this.#pauseMessages = Math.min(PAUSE_INBOX_MESSAGES, Math.floor(this.#maxInbox / 2));
    // An error event says why a connection was lost (e.g. it went silent);
    // the close event that follows carries only code 1006.
    let lostBecause = "";
    socket.addEventListener("error", (event) => {
      const message = (event as ErrorEvent).message;
      if (typeof message === "string" && message !== "") lostBecause = message;
    });
    this.#closed = new Promise<void>((resolve) => {
      socket.addEventListener("close", (event) => {
        this.#closeReason ??= event.reason ||
          (lostBecause ? `${lostBecause} (code ${event.code})` : `code ${event.code}`);
        this.#end();
        resolve();
      });
    });
    socket.binaryType = "arraybuffer";
    socket.addEventListener("message", (event) => {
      if (this.#ended) return;
      let message: string | Uint8Array;
      if (typeof event.data === "string") {
        message = event.data;
      } else if (this.#binaryIterated && event.data instanceof ArrayBuffer) {
        message = new Uint8Array(event.data);
      } else {
        this.#fail(UNSUPPORTED_DATA, "binary message on a JSON-RPC socket");
        return;
      }
      if (message.length > this.#maxInboxChars) {
        this.#fail(
          MESSAGE_TOO_BIG,
          `inbox overflow: a message of ${message.length} bytes is larger than the inbox (${this.#maxInboxChars} bytes)`,
        );
        return;
      }
      // A socket that pauses holds at most its pause point plus one message:
      // past the count bound only if pausing failed; its bytes may pass the
      // byte bound by most of one message.
      if (
        this.#inbox.length >= this.#maxInbox ||
        (this.#pausable === null && this.#inboxChars + message.length > this.#maxInboxChars)
      ) {
        this.#fail(
          MESSAGE_TOO_BIG,
          `inbox overflow: the reader fell more than ${this.#maxInbox} messages or ${this.#maxInboxChars} bytes behind`,
        );
        return;
      }
      this.#inboxChars += message.length;
      this.#inbox.push(message);
      if (
        this.#pausable !== null && !this.#paused &&
        (this.#inboxChars >= this.#pauseChars || this.#inbox.length >= this.#pauseMessages)
      ) {
        this.#paused = true;
        this.#pausable.pauseReading();
      }
      this.#wake(false);
    });
  }

  /** Why the channel closed, once it has. */
  get closeReason(): string | undefined {
    return this.#closeReason;
  }

  #wake(done: boolean): void {
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.(done);
  }

  #end(): void {
    this.#ended = true;
    this.#wake(true);
  }

  #fail(code: number, reason: string): void {
    this.#closeReason = reason;
    this.#end();
    try {
      this.#socket.close(code, reason.slice(0, 120));
    } catch {
      // Already closing.
    }
  }

  /**
   * Sends one text message; waits while the socket's buffer is over the high
   * watermark. Messages go out in the order `send` was called, also when
   * some of them had to wait (pipelined requests rely on it).
   */
  send(message: string): Promise<void> {
    return this.#send(message);
  }

  /**
   * Binary messages (negotiated output): sent as binary WebSocket messages;
   * received ones are queued, not refused, once `messages()` is iterated.
   */
  readonly binary: BinaryLane = {
    send: (message) => this.#send(message),
    messages: () => this.#messages(true),
  };

  #send(message: string | Uint8Array): Promise<void> {
    if (this.#waitingSends === 0) {
      try {
        if (this.#trySend(message)) return Promise.resolve();
      } catch (error) {
        return Promise.reject(error);
      }
    }
    this.#waitingSends++;
    const sent = this.#sendQueue.then(async () => {
      try {
        while (!this.#trySend(message)) {
          await new Promise<void>((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
        }
      } finally {
        this.#waitingSends--;
      }
    });
    this.#sendQueue = sent.catch(() => {});
    return sent;
  }

  /** Sends now and returns true, or returns false while the buffer is over the watermark. */
  #trySend(message: string | Uint8Array): boolean {
    if (this.#ended || this.#socket.readyState !== WebSocket.OPEN) {
      throw new RelayClosedError(
        `Cannot send: the connection closed: ${this.#closeReason ?? "closed"}`,
      );
    }
    if (this.#socket.bufferedAmount > this.#highWaterMark) return false;
    this.#socket.send(message);
    return true;
  }

  /** Closes the socket; idempotent. */
  close(reason = "client_close"): Promise<void> {
    if (!this.#ended) {
      this.#closeReason ??= reason;
      this.#end();
      try {
        this.#socket.close(NORMAL_CLOSURE, reason);
      } catch {
        // Already closing.
      }
    }
    return this.#closed;
  }

  /** Settles once the socket has closed. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /** Yields received messages in order; ends when the socket closes. */
  [Symbol.asyncIterator](): AsyncIterator<string> {
    return this.#messages(false) as AsyncGenerator<string>;
  }

  async *#messages(binary: boolean): AsyncGenerator<string | Uint8Array> {
    this.#binaryIterated = binary;
    while (true) {
      const next = this.#inbox.shift();
      if (next !== undefined) {
        this.#inboxChars -= next.length;
        if (
          this.#paused && this.#inboxChars <= this.#pauseChars / 2 &&
          this.#inbox.length <= this.#pauseMessages / 2
        ) {
          this.#paused = false;
          this.#pausable!.resumeReading();
        }
        yield next;
        continue;
      }
      if (this.#ended) return;
      const done = await new Promise<boolean>((resolve) => (this.#waiter = resolve));
      if (done && this.#inbox.length === 0) return;
    }
  }
}

/**
 * Opens a WebSocket and adapts it to a {@linkcode MessageChannel} once open.
 *
 * @param url A `ws:` or `wss:` URL.
 * @param options Token, signal, timeout and limits.
 * @returns The open channel.
 * @throws {RelayClosedError} When the socket cannot be opened or the timeout passes.
 */
export function openWebSocketChannel(
  url: string,
  options: WebSocketChannelOptions = {},
): Promise<WebSocketChannel> {
  options.signal?.throwIfAborted();
  const timeoutMs = options.timeoutMs ?? 10_000;
  const headers = new Headers();
  if (options.token !== undefined) headers.set("authorization", `Bearer ${options.token}`);
  const socket = options.transport === "native"
    ? new WebSocket(url, { headers })
    : new TcpWebSocket(url, {
      headers,
      maxMessageBytes: MAX_RECEIVED_MESSAGE_BYTES,
      ...(options.idleTimeoutMs !== undefined ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    });
  return new Promise<WebSocketChannel>((resolve, reject) => {
    let settled = false;
    const finish = (error?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      socket.removeEventListener("open", onOpen);
      socket.removeEventListener("error", onError);
      if (error === undefined) return;
      try {
        socket.close();
      } catch {
        // Not open yet.
      }
      reject(error);
    };
    const onOpen = (): void => {
      const channel = new WebSocketChannel(socket, options);
      finish();
      resolve(channel);
    };
    const onError = (event: Event): void => {
      const message = (event as ErrorEvent).message || "connection refused or rejected";
      finish(
        new RelayClosedError(`Cannot connect to ${printableUrl(url)}: ${message}`, {
          refusal: upgradeRefusal(event),
        }),
      );
    };
    const onAbort = (): void => finish(options.signal?.reason);
    const timer = setTimeout(
      () =>
        finish(
          new RelayClosedError(
            `Cannot connect to ${printableUrl(url)}: timed out after ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
    socket.addEventListener("open", onOpen);
    socket.addEventListener("error", onError);
    options.signal?.addEventListener("abort", onAbort, { once: true });
  });
}
