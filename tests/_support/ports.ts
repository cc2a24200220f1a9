/**
 * A free loopback port below the kernel's ephemeral range (32768 and up on
 * Linux by default), for a server a test restarts on the same port: in the
 * ephemeral range a client socket of a test running beside it may take the
 * port between the two servers (seen once as AddrInUse in a parallel run).
 *
 * @module
 */

/**
 * Picks a port from 20000–29999 that can be bound on 127.0.0.1 now.
 *
 * @returns The port.
 * @throws {Error} When 50 random picks were all taken.
 */
export function portBelowEphemeral(): number {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse)) throw error;
    }
  }
  throw new Error("Cannot find a free port in 20000-29999");
}
