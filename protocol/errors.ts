/** Error codes shared by the RPC server, the gateway and the CLI. */
export type ErrorCode =
  | 'bad_request'
  | 'unauthenticated'
  | 'forbidden'
  /** The caller may operate the instance, but the instance refuses the change (e.g. it is revoked). */
  | 'refused'
  | 'not_found'
  | 'conflict'
  | 'too_large'
  | 'unavailable'
  | 'internal';

const STATUS: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthenticated: 401,
  forbidden: 403,
  refused: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  unavailable: 503,
  internal: 500,
};

/** An error that carries its HTTP status and a one-line message meant for the user. */
export class AllegraError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'AllegraError';
    this.code = code;
    this.status = STATUS[code];
  }
}

/** Body of every error response of the RPC API. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

export function isErrorBody(value: unknown): value is ErrorBody {
  if (typeof value !== 'object' || value === null || !('error' in value)) return false;
  const e = (value as { error: unknown }).error;
  return typeof e === 'object' && e !== null && typeof (e as { message?: unknown }).message === 'string';
}
