/**
 * Short-lived signed socket URLs: the registry answers a registration with
 * `ws://HOST:PORT/executor/{id}?role=executor&exp=<unix ms>&sig=<hex>` (and a
 * harness's `connect` with the same for `/harness/{id}?role=harness`), where
 * `sig` is HMAC-SHA256 (WebCrypto) over the role, the executor id and the
 * expiry. The socket needs no token: the URL is the credential, and it stops
 * working at `exp`.
 *
 * @module
 */

/** Bytes of a generated signing key. */
export const SIGNING_KEY_BYTES = 32;
/** Shortest signing key accepted, in bytes. */
export const MIN_SIGNING_KEY_BYTES = 16;
/** Hex length of an HMAC-SHA256 signature. */
const SIG_HEX_LENGTH = 64;
const HEX = /^[0-9a-f]+$/;
const DIGITS = /^[0-9]{1,16}$/;
const utf8 = new TextEncoder();
const HEX_DIGITS = "0123456789abcdef";

/** Why a signed URL was refused. */
export type SignedUrlDefect = "missing" | "malformed" | "expired" | "bad_signature";

function toHex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i++) {
    out += HEX_DIGITS[bytes[i] >> 4] + HEX_DIGITS[bytes[i] & 15];
  }
  return out;
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** The signed message: versioned and unambiguous (the id cannot contain a newline). */
function message(role: string, executorId: string, exp: number): Uint8Array<ArrayBuffer> {
  return utf8.encode(`outpost-url-v1\n${role}\n${executorId}\n${exp}`);
}

/** Signs and verifies executor URLs with one HMAC-SHA256 key. */
export class UrlSigner {
  #key: CryptoKey;

  private constructor(key: CryptoKey) {
    this.#key = key;
  }

  /**
   * Creates a signer from raw key bytes, or from a fresh random key.
   *
   * @param rawKey At least 16 bytes; a random 32-byte key when omitted.
   * @returns The signer.
   * @throws {RangeError} When the key is shorter than 16 bytes.
   */
  static async create(rawKey?: Uint8Array): Promise<UrlSigner> {
    let raw: Uint8Array<ArrayBuffer>;
    if (rawKey === undefined) {
      raw = crypto.getRandomValues(new Uint8Array(SIGNING_KEY_BYTES));
    } else {
      // A string would pass the length check and become a key of its digits' values.
      if (!(rawKey instanceof Uint8Array)) {
        throw new TypeError("Cannot use signing key: it must be a Uint8Array");
      }
      if (rawKey.length < MIN_SIGNING_KEY_BYTES) {
        throw new RangeError(
          `Cannot use signing key: length ${rawKey.length} is below the ${MIN_SIGNING_KEY_BYTES} byte minimum`,
        );
      }
      raw = new Uint8Array(rawKey);
    }
    const key = await crypto.subtle.importKey(
      "raw",
      raw,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    );
    raw.fill(0);
    return new UrlSigner(key);
  }

  /**
   * Signs the query of an executor URL.
   *
   * @param role The socket role the URL is for ("executor").
   * @param executorId The executor id (already validated).
   * @param exp Expiry, in Unix milliseconds.
   * @returns The hex signature.
   */
  async sign(role: string, executorId: string, exp: number): Promise<string> {
    const mac = await crypto.subtle.sign("HMAC", this.#key, message(role, executorId, exp));
    return toHex(new Uint8Array(mac));
  }

  /**
   * Checks the `exp` and `sig` query parameters of a URL. The signature is
   * checked with WebCrypto's verify (constant time) before the expiry, so a
   * forged URL never learns anything from the answer.
   *
   * @param role The socket role the URL is for.
   * @param executorId The executor id from the URL path.
   * @param params The URL's query parameters.
   * @param now The current time in Unix milliseconds.
   * @returns undefined when valid, else what is wrong.
   */
  async verify(
    role: string,
    executorId: string,
    params: URLSearchParams,
    now: number,
  ): Promise<SignedUrlDefect | undefined> {
    const expText = params.get("exp");
    const sig = params.get("sig");
    if (expText === null || sig === null) return "missing";
    if (!DIGITS.test(expText) || sig.length !== SIG_HEX_LENGTH || !HEX.test(sig)) {
      return "malformed";
    }
    const exp = Number(expText);
    const ok = await crypto.subtle.verify(
      "HMAC",
      this.#key,
      fromHex(sig),
      message(role, executorId, exp),
    );
    if (!ok) return "bad_signature";
    return exp > now ? undefined : "expired";
  }
}
