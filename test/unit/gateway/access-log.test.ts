import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { accessLogFor } from '../../../gateway/access-log.js';

describe('access log', () => {
  it('writes one valid pino-format JSON line per request, escaping client-controlled paths', () => {
    const lines: string[] = [];
    const logger = pino({ name: 'gateway' }, { write: (l: string) => void lines.push(l) });
    const access = accessLogFor(logger);
    access({
      id: 'abc',
      method: 'GET',
      host: 'app.test',
      path: '/a"b\\c\n?x=\u0001',
      status: 200,
      ms: 1.23456,
      upstream: 'http://127.0.0.1:1',
      attempts: 2,
    });
    logger.info('ordinary line');
    expect(lines).toHaveLength(2);
    const entry = JSON.parse(lines[0] as string);
    expect(entry).toMatchObject({
      level: 30,
      name: 'gateway',
      access: true,
      id: 'abc',
      method: 'GET',
      host: 'app.test',
      path: '/a"b\\c\n?x=\u0001',
      status: 200,
      ms: 1.235,
      attempts: 2,
      msg: 'access',
    });
    // Same envelope as the logger's own lines.
    const ordinary = JSON.parse(lines[1] as string);
    expect(Object.keys(entry).slice(0, 5)).toEqual(Object.keys(ordinary).slice(0, 5));
  });
});
