/**
 * Test support: a child process that prints JSON lines (a support script, a
 * server under test), read as they come; it stops when its stdin closes.
 *
 * @module
 */

import { DeadlineError, withDeadline } from "./deadline.ts";

/** A child process that prints JSON lines; stops when its stdin closes. */
export class JsonLinesProcess implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly lines: Record<string, unknown>[] = [];
  #waiters: (() => void)[] = [];
  #reading: Promise<void>;
  #stopped = false;

  /** Starts `program` with `args` (and `env` added to this process's environment). */
  constructor(program: string, args: string[], env?: Record<string, string>) {
    const child = new Deno.Command(program, {
      args,
      ...(env ? { env } : {}),
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.child = child;
    this.#reading = (async () => {
      let buffer = "";
      for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
        buffer += text;
        let i: number;
        while ((i = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, i);
          buffer = buffer.slice(i + 1);
          try {
            this.lines.push(JSON.parse(line));
          } catch {
            // not ours
          }
          for (const w of this.#waiters.splice(0)) w();
        }
      }
      for (const w of this.#waiters.splice(0)) w();
    })();
  }

  /** Waits for a line matching `predicate` (also one already seen after `from`). */
  async waitFor(
    predicate: (line: Record<string, unknown>) => boolean,
    ms: number,
    label: string,
    from = 0,
  ): Promise<Record<string, unknown>> {
    const end = performance.now() + ms;
    while (true) {
      const found = this.lines.slice(from).find(predicate);
      if (found) return found;
      const left = end - performance.now();
      if (left <= 0) throw new DeadlineError(label, ms);
      await withDeadline(new Promise<void>((resolve) => this.#waiters.push(resolve)), left, label)
        .catch(() => {});
    }
  }

  /** Closes stdin and waits for the exit. */
  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      await this.child.stdin.close().catch(() => {});
    }
    await withDeadline(this.child.status, 10_000, "child exit").catch(() => {
      this.child.kill("SIGKILL");
    });
    await this.child.status;
    await this.#reading;
  }

  /** Kills at once (SIGKILL) and waits. */
  async kill(): Promise<void> {
    this.#stopped = true;
    try {
      this.child.kill("SIGKILL");
    } catch {
      // gone
    }
    await this.child.status;
    await this.child.stdin.close().catch(() => {});
    await this.#reading;
  }

  /** Stops it; same as {@linkcode JsonLinesProcess.stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}
