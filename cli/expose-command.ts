/** `allegra expose NAME --port P [--domain D]`: route + certificate, with progress, then the https URL. */
import type { CertStatusRecord } from '../protocol/types.js';
import { client, type GlobalOpts } from './instance-commands.js';
import { CliError, type Output } from './output.js';

interface CertInfo {
  host: string;
  status: CertStatusRecord | null;
  notAfter: number | null;
  issuer: string | null;
}

export async function exposeCommand(
  name: string,
  opts: { port?: string; domain?: string; redirect?: boolean; wait?: boolean; timeout?: string },
  g: GlobalOpts,
  out: Output,
): Promise<void> {
  const port = opts.port === undefined ? undefined : Number(opts.port);
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535))
    throw new CliError(`--port expects a port number from 1 to 65535 (got "${opts.port}")`, 2);
  const timeoutMs = Number(opts.timeout ?? '90') * 1000;
  const rpc = client(g);
  const started = Date.now();
  const progress = out.progress(`route: exposing ${name}`);
  let result: { host: string; url: string };
  try {
    result = await rpc.call<{ host: string; url: string }>({
      method: 'POST',
      path: `/v1/instances/${encodeURIComponent(name)}/expose`,
      body: {
        json: {
          ...(port === undefined ? {} : { port }),
          ...(opts.domain ? { domain: opts.domain } : {}),
          redirectHttp: opts.redirect !== false,
        },
      },
    });
  } catch (err) {
    progress.fail(`route: ${name} could not be exposed`);
    throw err;
  }
  progress.update(`route: ${result.host} → ${name}; waiting for a gateway to order the certificate`);
  let cert: CertInfo | undefined;
  if (opts.wait !== false) {
    // A renewal in progress shows as "issued" with the old certificate, which is what is being served.
    for (;;) {
      const { certificates } = await rpc.call<{ certificates: CertInfo[] }>({
        method: 'GET',
        path: `/v1/instances/${encodeURIComponent(name)}/certificates`,
      });
      cert = certificates.find((c) => c.host === result.host);
      const state = cert?.status?.state;
      if (cert?.notAfter && state !== 'ordering' && state !== 'challenge') break;
      if (state === 'ordering') progress.update(`order: ${cert?.status?.detail}`);
      else if (state === 'challenge') progress.update(`challenge: ${cert?.status?.detail}`);
      else if (state === 'failed') progress.update(`certificate: attempt failed (${cert?.status?.detail}); retrying`);
      if (Date.now() - started > timeoutMs) {
        progress.fail('certificate: not issued in time');
        throw new CliError(
          `no certificate for ${result.host} after ${timeoutMs / 1000}s${cert?.status ? ` (last state: ${cert.status.state}: ${cert.status.detail})` : ''}`,
        );
      }
      await new Promise((r) => setTimeout(r, 150));
    }
    progress.succeed(
      `certificate: issued for ${result.host} by the ${cert.issuer} issuer, valid until ${new Date(cert.notAfter as number).toISOString()}`,
    );
  } else {
    progress.succeed(`route: ${result.host} exposed; the certificate is being ordered`);
  }
  const seconds = (Date.now() - started) / 1000;
  out.result(
    { url: result.url, host: result.host, certificate: cert ? { issuer: cert.issuer, notAfter: cert.notAfter } : null, seconds },
    () => result.url,
  );
}
