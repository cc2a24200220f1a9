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
   * Where {@linkcode MessageChannel.tracksDelivery} is true, `onDelivered` is
   * called once the far end has the message (never if the channel ends
   * first); other channels ignore it.
   */
  send(message: string, onDelivered?: () => void): Promise<void>;
  /**
   * True when `send` and `binary.send` call their `onDelivered` callback: the
   * transport knows when the far end has a message (a mux stream, whose peer
   * acknowledges). Sessions keep an event retained for replay until then.
   */
  readonly tracksDelivery?: boolean;
  /** Closes the channel; idempotent. Pending sends and reads end. */
  close(reason?: string): Promise<void>;
  /** Settles once the channel is closed, by either side or by its transport. */
  readonly closed: Promise<void>;
  /**
   * Binary messages, where the transport carries them (a mux stream, a
   * WebSocket); used only after `initialize` negotiated them (PROTOCOL.md).
   */
  readonly binary?: BinaryLane;
  /**
   * The largest message the channel carries, in UTF-8 bytes, when the
   * transport has one below the JSON-RPC limit (a Codex v1 mux stream carries
   * one relay frame per message); `undefined` when it is not known. A larger
   * send rejects with a `RangeError`.
   */
  readonly maxMessageBytes?: number;
}

/**
 * The binary side of a {@linkcode MessageChannel}: messages that are bytes,
 * sent and received in one order with the text messages.
 */
export interface BinaryLane {
  /**
   * Sends one binary message (its first byte is `0x00`), in call order with
   * text sends and with the same backpressure; `onDelivered` as for
   * {@linkcode MessageChannel.send}.
   */
  send(message: Uint8Array, onDelivered?: () => void): Promise<void>;
  /**
   * Iterates every received message in order, text as strings and binary as
   * bytes; use it instead of the channel's own (text only) iterator. On a mux
   * stream a message is binary when its first byte is `0x00`, and a text
   * message that is not valid UTF-8 is yielded as bytes (not starting with
   * `0x00`) so the reader can refuse it: see `invalidTextAsBytes`.
   */
  messages(): AsyncIterable<string | Uint8Array>;
  /**
   * True when `messages()` yields a text message that is not valid UTF-8 as
   * bytes, so that bytes not starting with `0x00` are such text (a mux
   * stream, where text and binary share one lane); on a WebSocket they are
   * a binary message.
   */
  readonly invalidTextAsBytes?: boolean;
}
