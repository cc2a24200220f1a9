/**
 * A write lease (`fcntl F_SETLEASE`, `F_WRLCK`) held on a file by a perl
 * process, the far side of the boundary for tests of opens that must not wait
 * on one. By default the holder ignores SIGIO, the kernel's notice to let go,
 * so a plain open of the file waits the kernel's lease-break time (45 s by
 * default); with `letGoAfterMs` it lets go that long after the notice, as a
 * cooperating holder (Samba, the NFS server) does.
 *
 * @module
 */

import { withDeadline } from "./deadline.ts";

/** Whether perl (Debian's perl-base) is here to hold a lease. */
export const CAN_LEASE = await new Deno.Command("perl", { args: ["-e", "1"] }).output()
  .then((out) => out.success, () => false);

const HOLDER = `
use Fcntl;
open(my $fh, '+<', $ARGV[0]) or die "open: $!";
my $delay = $ARGV[1];
$SIG{IO} = $delay < 0 ? 'IGNORE' : sub {
  select(undef, undef, undef, $delay);
  fcntl($fh, 1024, F_UNLCK) or die "F_UNLCK: $!";
};
fcntl($fh, 1024, F_WRLCK) or die "F_SETLEASE: $!";
$| = 1;
print "held\\n";
<STDIN>;
`;

/** A lease held: `release` (or disposal, which does the same) ends it; idempotent. */
export interface HeldLease extends AsyncDisposable {
  release(): Promise<void>;
}

/**
 * Holds a write lease on `path` until released.
 *
 * @param letGoAfterMs Let go this long after the kernel's notice; by default never.
 */
export async function holdLease(path: string, letGoAfterMs?: number): Promise<HeldLease> {
  const delay = letGoAfterMs === undefined ? "-1" : String(letGoAfterMs / 1000);
  const holder = new Deno.Command("perl", {
    args: ["-e", HOLDER, path, delay],
    // Perl's deferred signals would handle a SIGIO that lands just before it blocks reading
    // stdin only once that read ends (a review: 9 of 100 holders missed their notice).
    env: { PERL_SIGNALS: "unsafe" },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(holder.stderr).text();
  const reader = holder.stdout.getReader();
  const first = await withDeadline(reader.read(), 5_000, "the lease holder's start");
  reader.releaseLock();
  await holder.stdout.cancel();
  const said = new TextDecoder().decode(first.value ?? new Uint8Array());
  if (said !== "held\n") {
    await holder.stdin.close();
    await holder.status;
    throw new Error(`perl could not lease ${path}: ${await stderr}`);
  }
  let released: Promise<void> | undefined;
  const release = () =>
    released ??= (async () => {
      await holder.stdin.close(); // its <STDIN> ends, and it exits
      await holder.status;
      await stderr;
    })();
  return { release, [Symbol.asyncDispose]: release };
}
