import { describe, expect, it } from 'vitest';
import { classify, decideRetry, type RetryInput, replayable } from '../../../gateway/retry.js';

const base: RetryInput = {
  kind: 'http',
  failure: 'not-sent',
  method: 'GET',
  responseStarted: false,
  bodyConsumed: false,
  attempts: 1,
  retries: 2,
  maxAttempts: Number.POSITIVE_INFINITY,
  retriedSameReplica: false,
  pooledConnections: true,
  budget: 'available',
};
const decide = (over: Partial<RetryInput>) => decideRetry({ ...base, ...over });

describe('classify', () => {
  it('maps transport error codes to failures', () => {
    expect(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH'].map(classify)).toEqual(['not-sent', 'not-sent', 'not-sent']);
    expect(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE'].map(classify)).toEqual(['connection-lost', 'connection-lost', 'connection-lost']);
    expect(classify('UND_ERR_HEADERS_TIMEOUT')).toBe('timeout');
    expect(classify('ALLEGRA_CLIENT_GONE')).toBe('client-gone');
    expect(classify('ALLEGRA_BODY_TOO_LARGE')).toBe('body-too-large');
    expect(classify('ERR_SOMETHING_ELSE')).toBe('error');
  });
});

describe('decideRetry', () => {
  it('retries a request that never reached a replica, whatever its method, outside the budget', () => {
    expect(decide({ method: 'POST' })).toEqual({ retry: true, sameReplica: false, takesBudget: false });
    expect(decide({ method: 'POST', budget: 'exhausted' })).toEqual({ retry: true, sameReplica: false, takesBudget: false });
  });

  it('retries an idempotent request that failed on the replica, taking a budget slot, and not past the budget', () => {
    expect(decide({ failure: 'error' })).toEqual({ retry: true, sameReplica: false, takesBudget: true });
    expect(decide({ failure: 'timeout', budget: 'held' })).toEqual({ retry: true, sameReplica: false, takesBudget: false });
    expect(decide({ failure: 'error', budget: 'exhausted' })).toEqual({ retry: false, answer: 502 });
    expect(decide({ failure: 'timeout', budget: 'exhausted' })).toEqual({ retry: false, answer: 504 });
  });

  it('never retries a POST that reached the replica, nor any request whose body was read', () => {
    expect(decide({ method: 'POST', failure: 'connection-lost' })).toEqual({ retry: false, answer: 502 });
    expect(decide({ method: 'PUT', failure: 'not-sent', bodyConsumed: true })).toEqual({ retry: false, answer: 502 });
  });

  it('tries a lost pooled connection once more on the same replica, then elsewhere, without the budget', () => {
    expect(decide({ failure: 'connection-lost', budget: 'exhausted' })).toEqual({ retry: true, sameReplica: true, takesBudget: false });
    expect(decide({ failure: 'connection-lost', retriedSameReplica: true, attempts: 2 })).toEqual({
      retry: true,
      sameReplica: false,
      takesBudget: false,
    });
  });

  it('retries a lost connection elsewhere at once where the transport keeps no pooled connections (Workers)', () => {
    expect(decide({ failure: 'connection-lost', pooledConnections: false })).toEqual({
      retry: true,
      sameReplica: false,
      takesBudget: false,
    });
  });

  it('stops at the route’s retries and at the runtime’s attempt limit', () => {
    expect(decide({ attempts: 3 })).toEqual({ retry: false, answer: 502 });
    expect(decide({ attempts: 1, retries: 0 })).toEqual({ retry: false, answer: 502 });
    expect(decide({ attempts: 2, maxAttempts: 2 })).toEqual({ retry: false, answer: 502 });
  });

  it('cuts a response that started, stops quietly for a client that left, and answers 413 for a body too large', () => {
    expect(decide({ failure: 'error', responseStarted: true })).toEqual({ retry: false, answer: 'cut' });
    expect(decide({ failure: 'mid-response' })).toEqual({ retry: false, answer: 'cut' });
    expect(decide({ failure: 'client-gone' })).toEqual({ retry: false, answer: 'client-gone' });
    expect(decide({ failure: 'body-too-large' })).toEqual({ retry: false, answer: 413 });
  });

  it('applies the same rules to gRPC and WebSocket handshakes with their own notion of replayable', () => {
    // gRPC calls are not known to be idempotent: a lost connection before any answer is retried (elsewhere)
    // only while no byte of the call was read; other failures are not.
    expect(decide({ kind: 'grpc', method: 'POST', failure: 'connection-lost' })).toEqual({
      retry: true,
      sameReplica: false,
      takesBudget: false,
    });
    expect(decide({ kind: 'grpc', method: 'POST', failure: 'connection-lost', bodyConsumed: true })).toEqual({ retry: false, answer: 502 });
    expect(decide({ kind: 'grpc', method: 'POST', failure: 'error' })).toEqual({ retry: false, answer: 502 });
    // A handshake is retried only if it never reached a replica.
    expect(decide({ kind: 'upgrade', failure: 'not-sent' }).retry).toBe(true);
    expect(decide({ kind: 'upgrade', failure: 'error' })).toEqual({ retry: false, answer: 502 });
    expect(replayable('upgrade', 'connection-lost', 'GET', false)).toBe(false);
  });
});
