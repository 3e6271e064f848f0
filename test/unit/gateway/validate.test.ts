import { describe, expect, it } from 'vitest';
import { authorityProblem, validateRequest } from '../../../gateway/validate.js';

const h1 = (url: string, raw: string[]) => ({ url, method: 'GET', httpVersionMajor: 1, rawHeaders: raw, headers: {} });

describe('request validation', () => {
  it('accepts names, IPv6 literals and ports up to 65535', () => {
    for (const ok of ['demo.localhost', 'demo.localhost:8080', 'a_b.test', '[::1]:443', '127.0.0.1:1', 'x.test:65535'])
      expect(authorityProblem(ok), ok).toBeNull();
  });

  it('refuses userinfo, bad ports and odd characters in Host', () => {
    expect(authorityProblem('rawlog.localhost:1@demo.localhost')).toMatch(/userinfo/);
    expect(authorityProblem('demo.localhost:99999')).toMatch(/port/);
    expect(authorityProblem('demo.localhost:80:81')).toMatch(/port/);
    expect(authorityProblem('demo.localhost:')).toMatch(/port/);
    expect(authorityProblem('demo.localhost:8o')).toMatch(/port/);
    expect(authorityProblem('demo localhost')).toMatch(/host name/);
    expect(authorityProblem('demo/evil')).toMatch(/host name/);
    expect(authorityProblem('[::1')).toMatch(/IPv6/);
  });

  it('routes an absolute-form target by its authority and sends it on in origin form', () => {
    expect(validateRequest(h1('http://Demo.localhost:8080/a?b=1', ['Host', 'demo.localhost']))).toEqual({
      ok: true,
      host: 'demo.localhost',
      authority: 'Demo.localhost:8080',
      path: '/a?b=1',
    });
    expect(validateRequest(h1('http://demo.localhost', []))).toMatchObject({ ok: true, host: 'demo.localhost', path: '/' });
    expect(validateRequest(h1('http://demo.localhost/', ['Host', 'other.localhost']))).toEqual({
      ok: false,
      message: 'Host header does not match the request target',
    });
    expect(validateRequest(h1('http://a@demo.localhost/', ['Host', 'demo.localhost']))).toMatchObject({ ok: false });
    expect(validateRequest(h1('ftp://demo.localhost/', ['Host', 'demo.localhost']))).toMatchObject({ ok: false });
  });

  it('refuses two Hosts and a Connection header nominating Host or the body framing', () => {
    expect(validateRequest(h1('/', ['Host', 'a.test', 'host', 'b.test']))).toMatchObject({
      ok: false,
      message: 'more than one Host header',
    });
    expect(validateRequest(h1('/', ['Host', 'a.test', 'Connection', 'close, host']))).toMatchObject({ ok: false });
    expect(validateRequest(h1('/', ['Host', 'a.test', 'Connection', 'Content-Length']))).toMatchObject({ ok: false });
    expect(validateRequest(h1('/', ['Host', 'a.test', 'Connection', 'close, x-hop']))).toMatchObject({ ok: true, host: 'a.test' });
  });

  it('on HTTP/2, takes :authority and refuses a Host that contradicts it', () => {
    const h2 = (raw: string[], authority: string) => ({
      url: '/',
      method: 'GET',
      httpVersionMajor: 2,
      rawHeaders: raw,
      headers: { ':authority': authority },
    });
    expect(validateRequest(h2([':authority', 'a.test:8443'], 'a.test:8443'))).toMatchObject({
      ok: true,
      host: 'a.test',
      authority: 'a.test:8443',
    });
    expect(validateRequest(h2(['host', 'b.test'], 'a.test'))).toMatchObject({ ok: false });
    expect(validateRequest(h2([], 'u@a.test'))).toMatchObject({ ok: false });
  });
});
