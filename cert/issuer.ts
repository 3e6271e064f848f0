/**
 * Where certificates come from. The manager (manager.ts) decides when a host needs one and makes sure only
 * one gateway asks at a time; an issuer only knows how to obtain one, publishing challenge answers through
 * the sink so that every gateway can serve them.
 */
export interface ChallengeSink {
  putHttp01(token: string, keyAuthorization: string): Promise<void>;
  removeHttp01(token: string): Promise<void>;
  putAlpn(host: string, certPem: string, keyPem: string): Promise<void>;
  removeAlpn(host: string): Promise<void>;
  progress(state: 'ordering' | 'challenge', detail: string): Promise<void>;
}

export interface Issued {
  certPem: string;
  keyPem: string;
}

export interface Issuer {
  readonly kind: 'acme' | 'local';
  issue(host: string, sink: ChallengeSink): Promise<Issued>;
}
