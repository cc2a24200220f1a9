/**
 * Relay frames for tests.
 *
 * @module
 */

import type { RelayFrame } from "../../lib/relay/frame_codec.ts";

const utf8 = new TextEncoder();

/**
 * A data frame in one segment that acknowledges nothing: what a legacy
 * (Codex v1) peer sends.
 *
 * @param streamId The stream id.
 * @param seq The sequence number.
 * @param payload The payload; a string is UTF-8 encoded.
 * @returns The frame.
 */
export function dataFrame(
  streamId: string,
  seq: number,
  payload: Uint8Array | string,
): RelayFrame {
  return {
    version: 1,
    streamId,
    ack: 0,
    ackBits: 0,
    body: {
      kind: "data",
      seq,
      segmentIndex: 0,
      segmentCount: 1,
      payload: typeof payload === "string" ? utf8.encode(payload) : payload,
    },
  };
}

/**
 * A frame of any other kind (ack, resume, reset, heartbeat) with the given
 * cumulative ack.
 *
 * @param streamId The stream id.
 * @param body The frame's body.
 * @param ack The cumulative ack it carries.
 * @returns The frame.
 */
export function bodyFrame(streamId: string, body: RelayFrame["body"], ack = 0): RelayFrame {
  return { version: 1, streamId, ack, ackBits: 0, body };
}
