/**
 * Sessions by id. A session outlives the connection that created it: when
 * the connection ends the session detaches and keeps its processes for a TTL
 * (default 30 s), during which `initialize` with `resumeSessionId` attaches a
 * new connection to it; after the TTL its processes are killed. At the
 * session limit a new session takes the place of the session detached the
 * longest whose processes are all closed (none starting, running, or with
 * output still held open by a child it left behind), so harnesses that
 * connect, run a command and leave are not refused for the TTL after them;
 * only live work is.
 *
 * @module
 */

import { checkTimerMs, counted } from "../_limits.ts";
import { RpcError } from "../errors.ts";
import { INVALID_REQUEST, SESSION_ATTACHED_ELSEWHERE } from "../rpc/error_codes.ts";
import type { ProcessEventSink, ProcessTable } from "./process_table.ts";
import { clipped } from "./_params.ts";

/** The default time a detached session keeps its processes: 30 s. */
export const DEFAULT_SESSION_TTL_MS: number = 30_000;
/** The default number of sessions (attached or detached) per executor. */
export const DEFAULT_MAX_SESSIONS: number = 256;

/** A connection attached to a session. */
export interface SessionAttachment {
  /** Receives the session's process events while attached. */
  readonly sink: ProcessEventSink;
  /** True when the sink confirms delivery (see `ProcessTable.setEventSink`). */
  readonly confirmsDelivery?: boolean;
  /**
   * True while the connection waits on nothing: no request being answered,
   * no process starting. (The registry checks the processes itself.)
   */
  readonly quiet?: boolean;
  /** When a message last went either way on the connection (`performance.now()`). */
  readonly activeAt?: number;
  /** Ends the connection: the registry gave its session's place to a new one. */
  evict?(): void;
}

/** One session: its id, its processes, and the connection attached to it. */
export interface SessionRecord {
  /** The session id (a UUID). */
  readonly id: string;
  /** The session's processes. */
  readonly table: ProcessTable;
  /** The attached connection, or null while detached. */
  readonly attachment: SessionAttachment | null;
}

interface Entry extends SessionRecord {
  attachment: SessionAttachment | null;
  timer: ReturnType<typeof setTimeout> | null;
}

/** Options of {@linkcode SessionRegistry}. */
export interface SessionRegistryOptions {
  /** Creates the process table of a new session. */
  createTable: () => ProcessTable;
  /** How long a detached session lives. @default {30000} */
  ttlMs?: number;
  /** Sessions per executor, attached or detached. @default {256} */
  maxSessions?: number;
  /**
   * At the session limit, an attached session whose connection has been
   * quiet this long, with every process closed, may give its place to a new
   * one (its harness went away without closing, behind a rendezvous that
   * does not say so). @default {60000}
   */
  idleAttachedMs?: number;
  /** The clock for `idleAttachedMs` (tests move it). @default {performance.now} */
  now?: () => number;
}

/** The default of {@linkcode SessionRegistryOptions.idleAttachedMs}: 60 s. */
export const DEFAULT_IDLE_ATTACHED_MS = 60_000;

/**
 * Keeps the sessions of one executor.
 *
 * @example
 * ```ts ignore
 * const registry = new SessionRegistry({ createTable: () => new ProcessTable() });
 * const session = registry.create({ sink: () => {} });
 * registry.detach(session.id, attachment); // starts the TTL
 * ```
 */
export class SessionRegistry implements AsyncDisposable {
  #sessions = new Map<string, Entry>();
  #createTable: () => ProcessTable;
  #ttlMs: number;
  #maxSessions: number;
  #idleAttachedMs: number;
  #now: () => number;
  #closing: Promise<void> | null = null;
  #expiring = new Set<Promise<void>>();

  /**
   * Creates the registry.
   *
   * @param options The table factory, TTL and session limit.
   * @throws {RangeError} When a limit is not a non-negative integer.
   */
  constructor(options: SessionRegistryOptions) {
    this.#createTable = options.createTable;
    this.#ttlMs = options.ttlMs ?? DEFAULT_SESSION_TTL_MS;
    this.#maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.#idleAttachedMs = options.idleAttachedMs ?? DEFAULT_IDLE_ATTACHED_MS;
    this.#now = options.now ?? (() => performance.now());
    if (!(this.#idleAttachedMs >= 0)) {
      throw new RangeError(
        `Cannot create session registry: idleAttachedMs ${this.#idleAttachedMs} is not a non-negative number`,
      );
    }
    // Past MAX_TIMER_MS the TTL's timer would fire at once: a detached session would go at once.
    checkTimerMs("Cannot create session registry", "ttlMs", this.#ttlMs, 0);
    if (!Number.isSafeInteger(this.#maxSessions) || this.#maxSessions < 1) {
      throw new RangeError(
        `Cannot create session registry: maxSessions ${this.#maxSessions} is not a positive integer`,
      );
    }
  }

  /** The registry's clock, which connections stamp their `activeAt` with. */
  now(): number {
    return this.#now();
  }

  /** Sessions now held (attached and detached). */
  get size(): number {
    return this.#sessions.size;
  }

  /**
   * Creates a session attached to `attachment`.
   * At the limit it replaces the session detached the longest whose
   * processes are all closed, or else the attached session whose connection
   * has waited on nothing for `idleAttachedMs` or more, the longest, with
   * every process closed (that connection is ended).
   *
   * @param attachment The connection.
   * @returns The session.
   * @throws {RpcError} -32600 when the session limit is reached (every session
   * attached or with a process not yet closed) or the registry is closed.
   */
  create(attachment: SessionAttachment): SessionRecord {
    if (this.#closing) {
      throw new RpcError(INVALID_REQUEST, "Cannot initialize: the executor is closing");
    }
    if (
      this.#sessions.size >= this.#maxSessions && !this.#dropIdleDetached() &&
      !this.#dropIdleAttached()
    ) {
      throw new RpcError(
        INVALID_REQUEST,
        `Cannot initialize: the limit of ${counted(this.#maxSessions, "session")} is reached, ` +
          "each attached or with a process not yet closed",
      );
    }
    const entry: Entry = {
      id: crypto.randomUUID(),
      table: this.#createTable(),
      attachment,
      timer: null,
    };
    this.#sessions.set(entry.id, entry);
    entry.table.setEventSink(attachment.sink, { confirmsDelivery: attachment.confirmsDelivery });
    return entry;
  }

  /**
   * Attaches `attachment` to a detached session.
   *
   * @param id The `resumeSessionId`.
   * @param attachment The new connection.
   * @returns The session.
   * @throws {RpcError} -32600 for an unknown or expired id; -32010 when another connection is attached.
   */
  resume(id: string, attachment: SessionAttachment): SessionRecord {
    const entry = this.#sessions.get(id);
    if (!entry || this.#closing) {
      throw new RpcError(
        INVALID_REQUEST,
        `Cannot resume session: unknown session id ${JSON.stringify(clipped(id, 64))}`,
      );
    }
    if (entry.attachment !== null && entry.attachment !== attachment) {
      throw new RpcError(
        SESSION_ATTACHED_ELSEWHERE,
        `Cannot resume session "${id}": it is attached to another connection`,
      );
    }
    if (entry.timer !== null) clearTimeout(entry.timer);
    entry.timer = null;
    entry.attachment = attachment;
    entry.table.setEventSink(attachment.sink, { confirmsDelivery: attachment.confirmsDelivery });
    return entry;
  }

  /**
   * Detaches `attachment` from its session (if it is still the attached one)
   * and starts the TTL; when it passes, the session's processes are killed.
   *
   * @param id The session id.
   * @param attachment The connection that ended.
   */
  detach(id: string, attachment: SessionAttachment): void {
    const entry = this.#sessions.get(id);
    if (!entry || entry.attachment !== attachment) return;
    entry.attachment = null;
    entry.table.setEventSink(null);
    if (this.#closing) return;
    // Detached entries sit in the order they detached, so eviction finds the longest detached first.
    this.#sessions.delete(id);
    this.#sessions.set(id, entry);
    entry.timer = setTimeout(() => {
      entry.timer = null;
      if (entry.attachment !== null || this.#sessions.get(id) !== entry) return;
      this.#sessions.delete(id);
      this.#expire(entry);
    }, this.#ttlMs);
  }

  /** Forgets the session detached the longest whose processes are all closed; false if none. */
  #dropIdleDetached(): boolean {
    for (const [id, entry] of this.#sessions) {
      if (entry.attachment !== null || entry.table.busy) continue;
      if (entry.timer !== null) clearTimeout(entry.timer);
      entry.timer = null;
      this.#sessions.delete(id);
      this.#expire(entry);
      return true;
    }
    return false;
  }

  /**
   * Ends the attached session idle the longest, if its connection has waited
   * on nothing for `idleAttachedMs` and its processes have all closed.
   */
  #dropIdleAttached(): boolean {
    const now = this.#now();
    let idlest: Entry | undefined;
    for (const entry of this.#sessions.values()) {
      const attachment = entry.attachment;
      if (attachment === null || attachment.quiet !== true || attachment.activeAt === undefined) {
        continue;
      }
      if (now - attachment.activeAt < this.#idleAttachedMs || entry.table.busy) continue;
      if (idlest === undefined || attachment.activeAt < idlest.attachment!.activeAt!) {
        idlest = entry;
      }
    }
    if (idlest === undefined) return false;
    const attachment = idlest.attachment!;
    idlest.attachment = null;
    idlest.table.setEventSink(null);
    this.#sessions.delete(idlest.id);
    this.#expire(idlest);
    attachment.evict?.();
    return true;
  }

  /** Closes a forgotten session's table, tracked so `close` waits for it. */
  #expire(entry: Entry): void {
    const done = entry.table.close().catch(() => {}).finally(() => this.#expiring.delete(done));
    this.#expiring.add(done);
  }

  /**
   * Kills every session's processes and forgets all sessions. Idempotent.
   *
   * @returns Once every process is gone.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const entries = [...this.#sessions.values()];
      this.#sessions.clear();
      for (const entry of entries) {
        if (entry.timer !== null) clearTimeout(entry.timer);
        entry.timer = null;
      }
      // Attached sessions keep their sinks while their programs end, so the
      // last output and exits reach their harnesses.
      await Promise.allSettled(entries.map((entry) => entry.table.close()));
      for (const entry of entries) entry.table.setEventSink(null);
      while (this.#expiring.size > 0) await Promise.allSettled([...this.#expiring]);
    })();
    return this.#closing;
  }

  /** Same as {@linkcode SessionRegistry.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
