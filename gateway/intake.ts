/**
 * Fair intake: how the work of requests that arrive together is ordered. A burst — one socket read of an
 * HTTP/2 session carrying a hundred streams, a wave of connections, a wave of delayed refusals — used to be
 * handled in one go, every request of it before the event loop went back to I/O, so a well-behaved client's
 * answer waited behind all of it (the attack suite measured 25–60 ms stalls at the start of each flood).
 * Jobs are now queued per client address and run in turns, one job per client per round (round robin),
 * within a time budget per event-loop turn; then the loop reads I/O again (other clients' answers among it)
 * before the next turn. A client with one request pending is served in the first round whatever the others
 * queued. Runtime-neutral but for the scheduling primitive: on Workers each request is an invocation of
 * its own and the engine does not use an intake.
 */

export type Job = () => void;

export interface IntakeOptions {
  /** Work done per event-loop turn before yielding to I/O, in ms. */
  budgetMs?: number;
  /** Schedules the next turn (setImmediate on Node; injectable for tests). */
  schedule?: (turn: () => void) => void;
  now?: () => number;
  /** Called with an error a job threw (the other jobs still run). */
  onError?: (err: unknown) => void;
}

export class Intake {
  /** Pending jobs per client; Map order is the round-robin order (a served client moves to the back). */
  private readonly lanes = new Map<string, Job[]>();
  private scheduled = false;
  private pending = 0;
  private readonly budgetMs: number;
  private readonly schedule: (turn: () => void) => void;
  private readonly now: () => number;
  private readonly onError: (err: unknown) => void;

  constructor(opts: IntakeOptions = {}) {
    this.budgetMs = opts.budgetMs ?? 2;
    this.schedule = opts.schedule ?? ((turn) => setImmediate(turn));
    this.now = opts.now ?? (() => performance.now());
    this.onError = opts.onError ?? (() => {});
  }

  /** Jobs waiting for a turn. */
  get size(): number {
    return this.pending;
  }

  push(client: string, job: Job): void {
    const lane = this.lanes.get(client);
    if (lane) lane.push(job);
    else this.lanes.set(client, [job]);
    this.pending++;
    if (!this.scheduled) {
      this.scheduled = true;
      this.schedule(this.turn);
    }
  }

  private readonly turn = (): void => {
    this.scheduled = false;
    const deadline = this.now() + this.budgetMs;
    while (this.lanes.size > 0) {
      // One round: the first job of every client, in round-robin order.
      for (const [client, lane] of this.lanes) {
        const job = lane.shift() as Job;
        this.lanes.delete(client);
        // A client with more to do goes to the back of the line.
        if (lane.length > 0) this.lanes.set(client, lane);
        this.pending--;
        try {
          job();
        } catch (err) {
          this.onError(err);
        }
        if (this.now() >= deadline) {
          if (this.lanes.size > 0 && !this.scheduled) {
            this.scheduled = true;
            this.schedule(this.turn);
          }
          return;
        }
      }
    }
  };
}
