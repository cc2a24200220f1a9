/**
 * Executor registration with the registry (reference §5.1): `POST
 * {registry}/cloud/executor/{id}/register` with a bearer token, answered by
 * `{"executor_id", "url"}` where `url` is a short-lived signed rendezvous URL.
 *
 * @module
 */

import { shownUnparsedUrl } from "../_userinfo.ts";
import { ProtocolError } from "../errors.ts";

/** Longest executor id accepted (it becomes one URL path segment). */
export const MAX_EXECUTOR_ID_LENGTH = 256;
/** Default timeout of one registration request, in milliseconds. */
export const DEFAULT_REGISTER_TIMEOUT_MS = 10_000;
/** How much of an error body is read and quoted in an error message; the rest is cancelled. */
export const MAX_ERROR_BODY_BYTES = 4096;
/** Largest registration answer read; a longer one fails registration, unread. */
export const MAX_ANSWER_BYTES = 64 * 1024;
const EXECUTOR_ID = /^[A-Za-z0-9_-]+$/;

/** Why a registration failed, and whether retrying can help. */
export class RegistrationError extends Error {
  /** HTTP status of the registry's answer, or 0 when none arrived. */
  readonly status: number;
  /** The registry's `error.code`, when it sent one. */
  readonly code?: string;
  /** True when retrying later may succeed (network trouble, 5xx, 429). */
  readonly retryable: boolean;
  /**
   * Creates the error.
   *
   * @param message What failed.
   * @param status HTTP status, 0 for none.
   * @param retryable Whether a later attempt may succeed.
   * @param code The registry's error code.
   * @param options Standard error options.
   */
  constructor(
    message: string,
    status: number,
    retryable: boolean,
    code?: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "RegistrationError";
    this.status = status;
    this.retryable = retryable;
    if (code !== undefined) this.code = code;
  }
}

/** The registry's answer. */
export interface Registration {
  /** The executor id the registry confirmed. */
  executorId: string;
  /** The signed rendezvous URL for the executor socket. */
  url: string;
}

/**
 * Normalizes a registry base URL: trims, maps `ws:`/`wss:` to `http:`/`https:`
 * (the rendezvous prints a ws URL and serves the registry on the same port),
 * and drops trailing slashes.
 *
 * @param registry The registry base URL.
 * @returns The normalized http(s) base, without a trailing slash.
 * @throws {TypeError} When the URL is empty, unparsable, not http(s)/ws(s),
 *   or carries credentials.
 */
export function normalizeRegistryUrl(registry: string): string {
  const trimmed = registry.trim();
  if (trimmed === "") throw new TypeError("Cannot use registry URL: it is empty");
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw new TypeError(`Cannot use registry URL: "${shownUnparsedUrl(trimmed)}" is not a URL`);
  }
  if (url.protocol === "ws:") url.protocol = "http:";
  else if (url.protocol === "wss:") url.protocol = "https:";
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(
      `Cannot use registry URL: scheme ${url.protocol} is not http, https, ws or wss`,
    );
  }
  if (url.username !== "" || url.password !== "") {
    // Sent as Basic credentials, they would replace the bearer token: the
    // rendezvous then answers 401, which reads as a refused token.
    throw new TypeError(
      "Cannot use registry URL: it must not carry credentials (user:password@); " +
        "pass the token as `token` (the CLI: OUTPOST_TOKEN or --token-file)",
    );
  }
  url.search = "";
  url.hash = "";
  return url.href.replace(/\/+$/, "");
}

/**
 * Checks an executor id: 1..256 ASCII letters, digits, `-` or `_`.
 *
 * @param executorId The id.
 * @returns The id, unchanged.
 * @throws {TypeError} When the id is empty, too long or has other characters.
 */
export function validateExecutorId(executorId: string): string {
  if (executorId === "") throw new TypeError("Cannot use executor id: it is empty");
  if (executorId.length > MAX_EXECUTOR_ID_LENGTH) {
    throw new TypeError(
      `Cannot use executor id: length ${executorId.length} exceeds ${MAX_EXECUTOR_ID_LENGTH}`,
    );
  }
  if (!EXECUTOR_ID.test(executorId)) {
    throw new TypeError(
      `Cannot use executor id "${executorId}": only ASCII letters, digits, "-" and "_" are allowed`,
    );
  }
  return executorId;
}

/** Options of {@linkcode registerExecutor}. */
export interface RegisterOptions {
  /** Cancels the request. */
  signal?: AbortSignal;
  /** Request timeout. @default {10000} */
  timeoutMs?: number;
  /** Display name sent in the request body. */
  name?: string;
}

/**
 * Reads at most `limit` bytes of a body, then cancels the rest, so a huge or
 * endless body costs no more than the limit.
 *
 * @returns The bytes read (at most `limit`) and whether more followed.
 */
async function readCapped(
  response: Response,
  limit: number,
): Promise<{ bytes: Uint8Array; truncated: boolean }> {
  if (response.body === null) return { bytes: new Uint8Array(0), truncated: false };
  const bytes = new Uint8Array(limit);
  let length = 0;
  const reader = response.body.getReader();
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) return { bytes: bytes.subarray(0, length), truncated: false };
      const take = Math.min(value.length, limit - length);
      bytes.set(value.subarray(0, take), length);
      length += take;
      if (take < value.length) {
        await reader.cancel().catch(() => {});
        return { bytes, truncated: true };
      }
    }
  } finally {
    reader.releaseLock();
  }
}

async function readErrorBody(response: Response): Promise<{ code?: string; message: string }> {
  const { bytes } = await readCapped(response, MAX_ERROR_BODY_BYTES)
    .catch(() => ({ bytes: new Uint8Array(0) }));
  // Streaming decode drops a character cut at the end instead of garbling it.
  const text = new TextDecoder().decode(bytes, { stream: true });
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const code = typeof body?.error?.code === "string" ? body.error.code : undefined;
    const message = typeof body?.error?.message === "string" ? body.error.message : text;
    return { code, message };
  } catch {
    return { message: text };
  }
}

/**
 * Registers an executor once.
 *
 * @param registry Normalized registry base URL (see {@linkcode normalizeRegistryUrl}).
 * @param executorId The executor id.
 * @param token The bearer token; sent only in the Authorization header.
 * @param options Signal, timeout and display name.
 * @returns The confirmed id and the signed rendezvous URL.
 * @throws {RegistrationError} On any failure; `retryable` says whether to try again.
 * @throws {ProtocolError} When the answer is malformed, over {@linkcode MAX_ANSWER_BYTES} or
 *   names another executor. An error answer is read up to {@linkcode MAX_ERROR_BODY_BYTES}.
 */
export async function registerExecutor(
  registry: string,
  executorId: string,
  token: string,
  options: RegisterOptions = {},
): Promise<Registration> {
  options.signal?.throwIfAborted();
  const timeoutMs = options.timeoutMs ?? DEFAULT_REGISTER_TIMEOUT_MS;
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new Error(`timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );
  const onAbort = (): void => controller.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  const endpoint = `${registry}/cloud/executor/${encodeURIComponent(executorId)}/register`;
  // A fresh connection each time, none kept: registering follows a lost
  // socket, and a connection kept from the last registration may have died
  // with it (a route gone silent), costing the whole timeout to find out.
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  /**
   * A failed fetch or read: the caller's abort as is, else an error saying
   * why (with the cause `fetch failed` hides, such as a refused connection),
   * retryable unless no retry can succeed: Deno refused net access, or the
   * port is one fetch never connects to (the Fetch standard's bad ports).
   */
  const failure = (error: unknown, what: string, status: number): unknown => {
    if (options.signal?.aborted) return options.signal.reason;
    const message = (error as Error)?.message ?? String(error);
    const cause = (error as Error)?.cause;
    const why = controller.signal.aborted
      ? String((controller.signal.reason as Error)?.message ?? controller.signal.reason)
      : cause instanceof Error
      ? `${message}: ${cause.message.replace(/^error sending request for url \(.*?\): /, "")}`
      : message;
    const blockedPort = error instanceof TypeError &&
      /Requests to port \d+ are blocked/.test(message);
    const hint = blockedPort
      ? " (fetch never connects to that port: run the rendezvous on another)"
      : error instanceof Deno.errors.NotCapable
      ? ` (run deno with --allow-net=${
        new URL(endpoint).host
      }: the executor permission set grants only 127.0.0.1 and localhost)`
      : "";
    const retryable = !blockedPort && !(error instanceof Deno.errors.NotCapable);
    return new RegistrationError(`${what}: ${why}${hint}`, status, retryable, undefined, {
      cause: error,
    });
  };
  try {
    let response: Response;
    try {
      response = await fetch(endpoint, {
        client,
        method: "POST",
        redirect: "manual",
        signal: controller.signal,
        headers: { "authorization": `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ executor_id: executorId, name: options.name ?? "outpost" }),
      });
    } catch (error) {
      throw failure(error, `Cannot register executor ${executorId} at ${registry}`, 0);
    }
    if (!response.ok) {
      const { code, message } = await readErrorBody(response);
      const status = response.status;
      const detail = message ? `: ${message}` : "";
      if (status === 401 || status === 403) {
        throw new RegistrationError(
          `Cannot register executor ${executorId}: the registry refused the token ` +
            `(${status}${code ? ` ${code}` : ""})${detail}`,
          status,
          false,
          code,
        );
      }
      const retryable = status >= 500 || status === 429 || status === 408;
      const kind = status >= 300 && status < 400 ? "the registry answered with a redirect" : "";
      throw new RegistrationError(
        `Cannot register executor ${executorId}: ${kind || "HTTP"} ${status}` +
          `${code ? ` ${code}` : ""}${detail}`,
        status,
        retryable,
        code,
      );
    }
    let answer: { bytes: Uint8Array; truncated: boolean };
    try {
      answer = await readCapped(response, MAX_ANSWER_BYTES);
    } catch (error) {
      throw failure(
        error,
        `Cannot register executor ${executorId}: reading the registry's answer failed`,
        response.status,
      );
    }
    if (answer.truncated) {
      throw new ProtocolError(
        `Cannot register executor ${executorId}: the registry's answer exceeds ${MAX_ANSWER_BYTES} bytes`,
      );
    }
    let body: unknown;
    try {
      body = JSON.parse(new TextDecoder().decode(answer.bytes));
    } catch (error) {
      throw new ProtocolError(
        `Cannot register executor ${executorId}: the registry's answer is not JSON`,
        { cause: error },
      );
    }
    const fields = body as { executor_id?: unknown; url?: unknown };
    if (typeof fields?.executor_id !== "string" || typeof fields.url !== "string") {
      throw new ProtocolError(
        `Cannot register executor ${executorId}: the answer lacks "executor_id" or "url"`,
      );
    }
    if (fields.executor_id !== executorId) {
      throw new ProtocolError(
        `Cannot register executor ${executorId}: the registry confirmed another id "${fields.executor_id}"`,
      );
    }
    let url: URL;
    try {
      url = new URL(fields.url);
    } catch (error) {
      throw new ProtocolError(
        `Cannot register executor ${executorId}: the rendezvous URL is not a URL`,
        { cause: error },
      );
    }
    if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      throw new ProtocolError(
        `Cannot register executor ${executorId}: the rendezvous URL scheme ${url.protocol} is not ws or wss`,
      );
    }
    return { executorId: fields.executor_id, url: fields.url };
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    client.close();
  }
}
