// Health probes of local components: an HTTP(S) GET that must answer 200.
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";

export interface ProbeTls {
  ca?: Buffer | string;
  cert?: string;
  key?: string;
  /** The controller-manager and scheduler serve self-signed certificates; we only ask them for /healthz. */
  insecure?: boolean;
}

/** True when url answers 200 within two seconds; HTTPS uses the given CA and client identity. */
export function probe(url: string, tls: ProbeTls = {}): Promise<boolean> {
  const request = url.startsWith("https:") ? httpsRequest : httpRequest;
  return new Promise((resolvePromise) => {
    const req = request(
      url,
      { timeout: 2000, ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: tls.insecure !== true },
      (res) => {
        res.resume();
        resolvePromise(res.statusCode === 200);
      },
    );
    req.on("error", () => {
      resolvePromise(false);
    });
    req.on("timeout", () => req.destroy());
    req.end();
  });
}
