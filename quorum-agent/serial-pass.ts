/**
 * Runs an async pass one at a time: a request during a pass schedules exactly one more pass after it, so
 * bursts of registry events collapse into at most two passes and a pass never overlaps itself.
 */
export class SerialPass {
  private running = false;
  private again = false;
  private stopped = false;

  constructor(
    private readonly pass: () => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  request(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.pass()
      .catch(this.onError)
      .finally(() => {
        this.running = false;
        if (this.again) {
          this.again = false;
          this.request();
        }
      });
  }

  stop(): void {
    this.stopped = true;
  }
}
