// Pod IPs without a network: every pod gets its own 127.0.0.0/8 address, which
// Linux routes to loopback without configuration. Each cluster directory draws
// from its own /16 so clusters sharing a machine rarely meet.
import { clusterTag } from "./layout.js";

export const nodeAddress = "127.0.0.1";

/** The second octet of this cluster's pod range: 2..254 (127.0.x and 127.1.x are left to the machine). */
export function podRangeOctet(clusterDir: string): number {
  return 2 + (parseInt(clusterTag(clusterDir).slice(0, 6), 16) % 253);
}

/**
 * Hands out 127.B.x.y addresses round-robin, so a released address is reused
 * as late as possible (a client holding a stale EndpointSlice then fails fast
 * instead of reaching another pod).
 */
export class LoopbackAddressPool {
  private readonly byOwner = new Map<string, string>();
  private readonly inUse = new Set<string>();
  private cursor = 0;
  private static readonly size = 256 * 254; // x = 0..255, y = 1..254

  constructor(private readonly octet: number) {
    if (!Number.isInteger(octet) || octet < 1 || octet > 254) throw new Error(`pod range octet ${octet} is not 1..254`);
  }

  /** The owner's address, allocating one on first call. */
  allocate(owner: string): string {
    const existing = this.byOwner.get(owner);
    if (existing !== undefined) return existing;
    for (let tried = 0; tried < LoopbackAddressPool.size; tried++) {
      const candidate = this.addressAt(this.cursor);
      this.cursor = (this.cursor + 1) % LoopbackAddressPool.size;
      if (this.inUse.has(candidate)) continue;
      this.inUse.add(candidate);
      this.byOwner.set(owner, candidate);
      return candidate;
    }
    throw new Error(`all ${LoopbackAddressPool.size} pod addresses in 127.${this.octet}.0.0/16 are in use`);
  }

  release(owner: string): void {
    const address = this.byOwner.get(owner);
    if (address === undefined) return;
    this.byOwner.delete(owner);
    this.inUse.delete(address);
  }

  private addressAt(index: number): string {
    return `127.${this.octet}.${Math.floor(index / 254)}.${(index % 254) + 1}`;
  }
}
