// The operator's own mutual-TLS identity towards the replicators. It lives in a Secret the issuer
// renews (same name, new content), so the operator's gRPC channels read it through a certificate
// provider, as the replicators read their mounted files: new connections use the renewed
// certificate, open channels and streams go on.
import { experimental, type ChannelCredentials, type VerifyOptions } from "@grpc/grpc-js";
import { secrets, type KubeClient } from "../../runtime/index.js";
import type { CertificateIssuer } from "./issuer.js";

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** A certificate provider fed by update(): every listener hears the latest material, at once and on change. */
export class UpdatableCertificateProvider implements experimental.CertificateProvider {
  private latest: TlsMaterial | undefined;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();

  /** True when the material differs from what listeners had. */
  update(material: TlsMaterial): boolean {
    const previous = this.latest;
    if (
      previous !== undefined &&
      previous.ca.equals(material.ca) &&
      previous.cert.equals(material.cert) &&
      previous.key.equals(material.key)
    )
      return false;
    this.latest = material;
    for (const listener of this.caListeners) listener({ caCertificate: material.ca });
    for (const listener of this.identityListeners) listener({ certificate: material.cert, privateKey: material.key });
    return true;
  }

  get current(): TlsMaterial | undefined {
    return this.latest;
  }

  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    if (this.latest !== undefined) listener({ caCertificate: this.latest.ca });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    if (this.latest !== undefined) listener({ certificate: this.latest.cert, privateKey: this.latest.key });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }
}

/** How often the operator asks the issuer for its certificate (which renews it when due). */
export const identityRefreshMs = 60_000;

/**
 * The operator's identity: `credentials()` gives channel credentials that follow the Secret;
 * every call after identityRefreshMs asks the issuer again, so a renewal reaches new connections
 * within a minute of being due.
 */
export class OperatorIdentity {
  private readonly provider = new UpdatableCertificateProvider();
  private refreshedAt = -Infinity;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly deps: { client: KubeClient; certificates: CertificateIssuer; namespace: string },
    private readonly now: () => number = Date.now,
  ) {}

  async credentials(verify: VerifyOptions = {}): Promise<ChannelCredentials> {
    await this.refresh();
    return experimental.createCertificateProviderChannelCredentials(this.provider, this.provider, verify);
  }

  /** Reads the (possibly renewed) Secret; a failure keeps the material already loaded, if any. */
  refresh(): Promise<void> {
    if (this.now() - this.refreshedAt < identityRefreshMs && this.provider.current !== undefined)
      return Promise.resolve();
    this.refreshing ??= this.load()
      .then(() => {
        this.refreshedAt = this.now();
      })
      .catch((error: unknown) => {
        if (this.provider.current === undefined) throw error;
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  private async load(): Promise<void> {
    const { client, certificates, namespace } = this.deps;
    const name = await certificates.ensureReplicatorCertificate({ namespace, role: "operator" });
    const secret = await client.get(secrets, name, namespace);
    const field = (key: string) => {
      const value = secret?.data?.[key];
      if (value === undefined) throw new Error(`Secret ${namespace}/${name} has no ${key}`);
      return Buffer.from(value, "base64");
    };
    this.provider.update({ ca: field("ca.crt"), cert: field("tls.crt"), key: field("tls.key") });
  }
}
