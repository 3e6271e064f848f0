import { afterEach, describe, expect, it } from 'vitest';
import { replicaEnv, SANDBOX_PATH } from '../../../quorum-agent/sandbox/env.js';

describe('replicaEnv', () => {
  const input = { env: { GREETING: 'hi' }, port: 3000, instanceName: 'app', instanceId: 'i-1', slot: 2, dataDir: '/data' };
  afterEach(() => {
    delete process.env.ALLEGRA_REGISTRY_TOKEN;
    delete process.env.NODE_EXTRA_CA_CERTS;
  });

  it('starts from nothing: the agent’s own variables never reach a replica', () => {
    process.env.ALLEGRA_REGISTRY_TOKEN = 'secret';
    process.env.NODE_EXTRA_CA_CERTS = '/etc/agent-ca.pem';
    const env = replicaEnv(input);
    expect(Object.keys(env).sort()).toEqual(
      [
        'ALLEGRA_DATA_DIR',
        'ALLEGRA_INSTANCE',
        'ALLEGRA_INSTANCE_ID',
        'ALLEGRA_REPLICA',
        'GREETING',
        'HOME',
        'HOST',
        'LANG',
        'PATH',
        'PORT',
        'TMPDIR',
      ].sort(),
    );
    expect(env).toMatchObject({
      PORT: '3000',
      HOST: '127.0.0.1',
      ALLEGRA_REPLICA: '2',
      ALLEGRA_DATA_DIR: '/data',
      HOME: '/data',
      PATH: SANDBOX_PATH,
    });
  });

  it('keeps the instance’s own variables but never lets them override the documented ones', () => {
    const env = replicaEnv({ ...input, env: { PORT: '1', ALLEGRA_DATA_DIR: '/etc', ALLEGRA_OTHER: 'x', PATH: '/app/bin' } });
    expect(env.PORT).toBe('3000');
    expect(env.ALLEGRA_DATA_DIR).toBe('/data');
    expect(env.ALLEGRA_OTHER).toBeUndefined();
    // PATH is the instance's own business inside its sandbox.
    expect(env.PATH).toBe('/app/bin');
  });

  it('adds ALLEGRA_STATE_URL when the node offers the state API', () => {
    expect(replicaEnv({ ...input, stateUrl: 'http://127.0.0.1:7171/v1/' }).ALLEGRA_STATE_URL).toBe('http://127.0.0.1:7171/v1/');
    expect(replicaEnv(input).ALLEGRA_STATE_URL).toBeUndefined();
  });
});
