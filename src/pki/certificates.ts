// Issues the X.509 material the project needs: the local control plane's CA and
// certificates, and the mutual-TLS identities of replicators. ECDSA P-256 keeps
// generation fast enough to run on every `ksr local up` and in every test.
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const signingAlgorithm = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export interface PemKeyPair {
  /** PEM certificate. */
  cert: string;
  /** PEM PKCS#8 private key. */
  key: string;
}

export interface CertificateAuthority extends PemKeyPair {
  issue(request: CertificateRequest): Promise<PemKeyPair>;
}

export interface CertificateRequest {
  commonName: string;
  organizations?: string[];
  dnsNames?: string[];
  ipAddresses?: string[];
  usage: "server" | "client" | "both";
  validDays?: number;
}

const defaultValidDays = 365;

function subjectName(commonName: string, organizations: string[] = []): string {
  const escape = (value: string) => value.replace(/([,+="\\<>;#])/g, "\\$1");
  return [...organizations.map((o) => `O=${escape(o)}`), `CN=${escape(commonName)}`].join(", ");
}

function validity(days: number): { notBefore: Date; notAfter: Date } {
  // Backdate by an hour so clocks that disagree slightly still accept a fresh certificate.
  const notBefore = new Date(Date.now() - 60 * 60 * 1000);
  return { notBefore, notAfter: new Date(notBefore.getTime() + days * 24 * 60 * 60 * 1000) };
}

function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // keep the serial positive
  return Buffer.from(bytes).toString("hex");
}

async function generateKeyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(signingAlgorithm, true, ["sign", "verify"]);
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

async function importPair(pair: PemKeyPair): Promise<{ cert: x509.X509Certificate; privateKey: CryptoKey }> {
  const cert = new x509.X509Certificate(pair.cert);
  const der = x509.PemConverter.decodeFirst(pair.key);
  const privateKey = await webcrypto.subtle.importKey("pkcs8", der, signingAlgorithm, false, ["sign"]);
  return { cert, privateKey };
}

function makeAuthority(caPair: PemKeyPair): CertificateAuthority {
  return {
    ...caPair,
    async issue(request: CertificateRequest): Promise<PemKeyPair> {
      const ca = await importPair(caPair);
      const keys = await generateKeyPair();
      const ekus: string[] = [];
      if (request.usage !== "client") ekus.push(x509.ExtendedKeyUsage.serverAuth);
      if (request.usage !== "server") ekus.push(x509.ExtendedKeyUsage.clientAuth);
      const altNames = [
        ...(request.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
        ...(request.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
      ];
      const extensions: x509.Extension[] = [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension(ekus, false),
        await x509.AuthorityKeyIdentifierExtension.create(ca.cert, false),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ];
      if (altNames.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(altNames, false));
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: subjectName(request.commonName, request.organizations),
        issuer: ca.cert.subject,
        ...validity(request.validDays ?? defaultValidDays),
        signingAlgorithm,
        publicKey: keys.publicKey,
        signingKey: ca.privateKey,
        extensions,
      });
      return { cert: cert.toString("pem"), key: await privateKeyPem(keys.privateKey) };
    },
  };
}

/** Creates a new self-signed certificate authority. */
export async function createCertificateAuthority(commonName: string, validDays = 3650): Promise<CertificateAuthority> {
  const keys = await generateKeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: subjectName(commonName),
    ...validity(validDays),
    signingAlgorithm,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return makeAuthority({ cert: cert.toString("pem"), key: await privateKeyPem(keys.privateKey) });
}

/** Loads an existing authority from its PEM certificate and key. */
export function loadCertificateAuthority(pair: PemKeyPair): CertificateAuthority {
  return makeAuthority(pair);
}
