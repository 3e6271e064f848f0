/** The request/response shapes measured for every target, and the bodies the upstream serves. */

export type ScenarioId = 'small' | 'get16k' | 'get1m' | 'post64k';

export interface Scenario {
  id: ScenarioId;
  label: string;
  method: 'GET' | 'POST';
  path: string;
  requestBodyBytes: number;
  responseBodyBytes: number;
}

export const SMALL_BODY = 'hello world\n';

export const SCENARIOS: readonly Scenario[] = [
  {
    id: 'small',
    label: `GET, ${SMALL_BODY.length} B response`,
    method: 'GET',
    path: '/',
    requestBodyBytes: 0,
    responseBodyBytes: SMALL_BODY.length,
  },
  {
    id: 'get16k',
    label: 'GET, 16 KiB response',
    method: 'GET',
    path: '/16k',
    requestBodyBytes: 0,
    responseBodyBytes: 16 * 1024,
  },
  {
    id: 'get1m',
    label: 'GET, 1 MiB response',
    method: 'GET',
    path: '/1m',
    requestBodyBytes: 0,
    responseBodyBytes: 1024 * 1024,
  },
  {
    id: 'post64k',
    label: `POST 64 KiB body, ${SMALL_BODY.length} B response`,
    method: 'POST',
    path: '/upload',
    requestBodyBytes: 64 * 1024,
    responseBodyBytes: SMALL_BODY.length,
  },
];

export function scenarioById(id: string): Scenario {
  const s = SCENARIOS.find((x) => x.id === id);
  if (!s) throw new Error(`unknown scenario "${id}" (known: ${SCENARIOS.map((x) => x.id).join(', ')})`);
  return s;
}

/** The request body sent for a scenario (same bytes for every target and load generator). */
export function requestBody(s: Scenario): Buffer | undefined {
  return s.requestBodyBytes > 0 ? Buffer.alloc(s.requestBodyBytes, 'x') : undefined;
}
