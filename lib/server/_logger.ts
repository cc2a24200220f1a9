/**
 * A small structured logger for the CLI: human-readable lines by default,
 * one JSON object per line with `--log-format json`. It formats and redacts;
 * the caller supplies where lines go (the CLI writes them to stderr), so no
 * library module prints.
 *
 * Secrets never reach the output: fields whose name looks like a credential
 * (`token`, `authorization`, `secret`, `password`, `signingKey`, ...) are
 * replaced by `[redacted]`, and the `sig`/`token` query parameters of any URL
 * in a message or field value are masked. The literal values of the secrets
 * the logger is given (the token, a signing key) are masked wherever they
 * appear, since text from elsewhere (a registry's error body, an id it
 * confirms) can quote them in any form.
 *
 * @module
 */

/** Output format of a {@linkcode Logger}. */
export type LogFormat = "text" | "json";

/** Severity of one log line. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Structured fields attached to one log line. */
export type LogFields = Record<string, unknown>;

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Line format. @default {"text"} */
  format?: LogFormat;
  /** The lowest level written. @default {"info"} */
  level?: LogLevel;
  /** Receives each finished line, without the trailing newline. */
  write: (line: string) => void;
  /** Clock for timestamps. @default {() => new Date()} */
  now?: () => Date;
  /** Literal values masked wherever they appear in a line; more with {@linkcode Logger.addSecret}. @default {[]} */
  secrets?: readonly string[];
}

/** A structured logger; see {@linkcode createLogger}. */
export interface Logger {
  /** Writes a debug line. */
  debug(message: string, fields?: LogFields): void;
  /** Writes an info line. */
  info(message: string, fields?: LogFields): void;
  /** Writes a warning line. */
  warn(message: string, fields?: LogFields): void;
  /** Writes an error line. */
  error(message: string, fields?: LogFields): void;
  /**
   * Masks `secret` in every later line. The CLI creates its logger before it
   * reads the token, so secrets arrive after the logger. An empty string is ignored.
   */
  addSecret(secret: string): void;
}

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_KEY = /token|authori[sz]ation|secret|password|passwd|signing.?key|credential|cookie/i;
const SECRET_QUERY = /([?&](?:sig|token|access_token)=)[^&\s"']*/gi;
const BEARER = /(bearer\s+)[^\s"']+/gi;
/** The user and password part of a URL (`http://user:pw@host`). */
const USERINFO = /(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s@"']*@/gi;
const REDACTED = "[redacted]";

/**
 * Masks credentials inside a string: `sig=`/`token=` query values,
 * `Bearer` credentials and a URL's user and password.
 *
 * @param text Any text that may contain a URL or an Authorization value.
 * @returns The text with credentials replaced by `[redacted]`.
 */
export function redactText(text: string): string {
  return text.replace(SECRET_QUERY, `$1${REDACTED}`).replace(BEARER, `$1${REDACTED}`)
    .replace(USERINFO, `$1${REDACTED}@`);
}

/**
 * How common encoders quote a secret: JSON as `JSON.stringify` writes it,
 * with `/` as `\/`, and with `<`, `>`, `&` and `'` as `\u` escapes (Go's
 * `encoding/json` and others); percent-encoded as `encodeURIComponent`,
 * `encodeURI`, `URLSearchParams` and `URL` (path and query) write it, in
 * either case of hex. Other spellings are not recognized.
 */
function encodedForms(secret: string): string[] {
  const json = JSON.stringify(secret).slice(1, -1);
  const unicode = json.replace(
    /[<>&']/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  const forms = [json, json.replaceAll("/", "\\/"), unicode, unicode.replaceAll("/", "\\/")];
  try {
    const encoded = [
      encodeURIComponent(secret),
      encodeURI(secret),
      new URLSearchParams({ s: secret }).toString().slice(2),
      new URL(`http://h/${secret}`).pathname.slice(1),
      new URL(`http://h/?${secret}`).search.slice(1),
    ];
    for (const each of encoded) {
      forms.push(each, each.replace(/%[0-9A-F]{2}/g, (hex) => hex.toLowerCase()));
    }
  } catch {
    // A lone surrogate cannot be percent-encoded: no such form to mask.
  }
  return forms;
}

/** Replaces each literal secret in `text` (longest first, so one that contains another goes whole). */
function maskSecrets(text: string, secrets: readonly string[]): string {
  for (const secret of secrets) text = text.replaceAll(secret, REDACTED);
  return text;
}

/**
 * An object or array field as the JSON it is written as, its keys and
 * strings masked before they are escaped (an escaped `"` in a token would
 * no longer match).
 */
function maskData(value: unknown, secrets: readonly string[]): unknown {
  if (typeof value === "string") return maskSecrets(value, secrets);
  if (Array.isArray(value)) return value.map((item) => maskData(item, secrets));
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [maskSecrets(k, secrets), maskData(v, secrets)]),
  );
}

function redactValue(key: string, value: unknown, secrets: readonly string[]): unknown {
  if (SECRET_KEY.test(key)) return REDACTED;
  if (typeof value === "string") return redactText(maskSecrets(value, secrets));
  if (value instanceof Error) return redactText(maskSecrets(value.message, secrets));
  if (value instanceof URL) return redactText(maskSecrets(value.href, secrets));
  if (value !== null && typeof value === "object" && secrets.length > 0) {
    const json = JSON.stringify(value); // undefined for an object whose toJSON says nothing
    return json === undefined ? value : maskData(JSON.parse(json), secrets);
  }
  return value;
}

// deno-lint-ignore no-control-regex -- matching control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
/** The same class, for a test (no `g` flag: no `lastIndex` state between calls). */
const HAS_CONTROL = new RegExp(CONTROL.source);

/**
 * A message on one text line: control characters (a newline, a carriage
 * return, a terminal escape) written as JSON escapes, so that text from
 * elsewhere (a registry's error body) can neither forge a line nor drive the
 * terminal.
 */
function oneLine(text: string): string {
  return text.replace(CONTROL, (c) => {
    // JSON's own escape (`\n`, `\u001b`), or `\uXXXX` for what JSON leaves as is (C1, U+2028).
    const escaped = JSON.stringify(c).slice(1, -1);
    return escaped !== c ? escaped : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`;
  });
}

/** A field value: quoted when it holds a space, `"`, `=` or a control character, which are escaped. */
function textValue(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  const quoted = /[\s"=]/.test(text) || HAS_CONTROL.test(text) || text === ""
    ? JSON.stringify(text)
    : text;
  return oneLine(quoted);
}

/**
 * Creates a logger writing human text or JSON lines to `options.write`.
 *
 * @param options Format, minimum level and the line sink.
 * @returns The logger.
 * @example
 * ```ts
 * const lines: string[] = [];
 * const log = createLogger({ format: "json", write: (l) => lines.push(l) });
 * log.info("executor connected", { executorId: "e-1", token: "s3cret" });
 * // lines[0] has "token":"[redacted]"
 * ```
 */
export function createLogger(options: LoggerOptions): Logger {
  const format = options.format ?? "text";
  const min = LEVEL_RANK[options.level ?? "info"];
  const now = options.now ?? (() => new Date());
  let secrets: string[] = [];
  const addSecret = (secret: string): void => {
    if (secret === "") return;
    // As quoted in a JSON body, and percent-encoded in a URL, too.
    const forms = [secret, ...encodedForms(secret)];
    const added = forms.filter((form, i) => forms.indexOf(form) === i && !secrets.includes(form));
    if (added.length > 0) secrets = [...secrets, ...added].sort((a, b) => b.length - a.length);
  };
  for (const secret of options.secrets ?? []) addSecret(secret);
  const write = options.write;
  const emit = (level: LogLevel, message: string, fields: LogFields = {}): void => {
    if (LEVEL_RANK[level] < min) return;
    const clean: LogFields = {};
    for (const [key, value] of Object.entries(fields)) {
      if (value !== undefined) clean[key] = redactValue(key, value, secrets);
    }
    const time = now().toISOString();
    const msg = redactText(maskSecrets(message, secrets));
    if (format === "json") {
      write(JSON.stringify({ time, level, msg, ...clean }));
      return;
    }
    let line = `${time} ${level.toUpperCase().padEnd(5)} ${oneLine(msg)}`;
    for (const [key, value] of Object.entries(clean)) line += ` ${key}=${textValue(value)}`;
    write(line);
  };
  return {
    debug: (message, fields) => emit("debug", message, fields),
    info: (message, fields) => emit("info", message, fields),
    warn: (message, fields) => emit("warn", message, fields),
    error: (message, fields) => emit("error", message, fields),
    addSecret,
  };
}
