/**
 * Gets an instance's code ready to run on this node, off the reconcile loop: pull the blob from a holder
 * when it is missing, unpack it with limits (artifacts.ts) into a directory of the instance's own, and tell
 * the agent when it is ready. The reconcile pass only asks `ready(spec)`, which never waits: one tenant's
 * huge, slow or hostile artifact cannot hold up any other tenant's replicas.
 *
 * A refused artifact (a bomb, links out of the app, not a tar) is refused for good: artifacts are content
 * addressed, so the same bytes always get the same verdict. Other failures (a peer unreachable, the disk
 * full) are retried with exponential backoff. Every change of phase is reported, so `allegra status` can
 * show each member's state and reason.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { ArtifactRef, InstanceSpec } from '../protocol/types.js';
import { type ArtifactLimits, ArtifactRefused, unpackArtifact } from './artifacts.js';
import type { BlobStore } from './blobs.js';

export type PreparePhase = 'fetching' | 'unpacking' | 'ready' | 'failed';

export interface PrepareStatus {
  phase: PreparePhase;
  sha256: string | null;
  reason?: string;
  /** When the next attempt is due after a failure that may be transient. */
  retryAt?: number;
}

export interface PreparerOptions {
  dataDir: string;
  blobs: BlobStore;
  limits: ArtifactLimits;
  log: Logger;
  /** Pulls a missing blob from the nodes that hold it; rejects if none could provide it. */
  fetchBlob: (artifact: ArtifactRef) => Promise<void>;
  /** Called when some instance became ready (or failed): the agent runs a reconcile pass. */
  onSettled: () => void;
  /** Called on every change of an instance's phase. */
  onStatus: (spec: InstanceSpec, status: PrepareStatus) => void;
}

interface Job {
  sha256: string;
  status: PrepareStatus;
  dir?: string;
  running: boolean;
  failures: number;
  timer?: NodeJS.Timeout;
}

const MAX_BACKOFF_MS = 5 * 60_000;

export class ArtifactPreparer {
  /** Per instance: the job for its current artifact. */
  private readonly jobs = new Map<string, Job>();
  /** Verdicts on refused blobs, by hash. */
  private readonly refused = new Map<string, string>();
  private stopped = false;

  constructor(private readonly opts: PreparerOptions) {
    // Half-unpacked directories of a previous run are never complete: remove them.
    const apps = join(opts.dataDir, 'apps');
    mkdirSync(apps, { recursive: true });
    for (const id of readdirSync(apps))
      for (const entry of readdirSync(join(apps, id)))
        if (entry.includes('.tmp-')) rmSync(join(apps, id, entry), { recursive: true, force: true });
  }

  appDir(instanceId: string, sha256: string): string {
    return join(this.opts.dataDir, 'apps', instanceId, sha256.slice(0, 16));
  }

  /** The directory to run `spec` from, or undefined while it is being prepared (or failed). Never waits. */
  ready(spec: InstanceSpec): string | undefined {
    if (!spec.artifact) {
      const dir = join(this.opts.dataDir, 'apps', spec.id, 'empty');
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      return dir;
    }
    const { sha256 } = spec.artifact;
    let job = this.jobs.get(spec.id);
    if (!job || job.sha256 !== sha256) {
      if (job?.timer) clearTimeout(job.timer);
      job = { sha256, status: { phase: 'unpacking', sha256 }, running: false, failures: 0 };
      this.jobs.set(spec.id, job);
      const dir = this.appDir(spec.id, sha256);
      if (existsSync(dir)) {
        // Unpacked on an earlier run: directories only appear complete (renamed into place).
        job.dir = dir;
        this.setStatus(spec, job, { phase: 'ready', sha256 });
        return dir;
      }
      const verdict = this.refused.get(sha256);
      if (verdict) {
        this.setStatus(spec, job, { phase: 'failed', sha256, reason: verdict });
        return undefined;
      }
      void this.run(spec, job);
    }
    return job.dir;
  }

  status(instanceId: string): PrepareStatus | undefined {
    return this.jobs.get(instanceId)?.status;
  }

  private async run(spec: InstanceSpec, job: Job): Promise<void> {
    if (job.running || this.stopped || this.jobs.get(spec.id) !== job) return;
    job.running = true;
    const artifact = spec.artifact as ArtifactRef;
    try {
      if (!this.opts.blobs.has(artifact.sha256)) {
        this.setStatus(spec, job, { phase: 'fetching', sha256: artifact.sha256 });
        await this.opts.fetchBlob(artifact);
      }
      this.setStatus(spec, job, { phase: 'unpacking', sha256: artifact.sha256 });
      const dir = this.appDir(spec.id, artifact.sha256);
      await unpackArtifact(this.opts.blobs.path(artifact.sha256), dir, this.opts.limits);
      if (this.jobs.get(spec.id) !== job) return;
      job.dir = dir;
      this.removeOlderVersions(spec.id, dir);
      this.setStatus(spec, job, { phase: 'ready', sha256: artifact.sha256 });
    } catch (err) {
      if (this.jobs.get(spec.id) !== job) return;
      if (err instanceof ArtifactRefused) {
        this.refused.set(artifact.sha256, err.message);
        this.opts.log.warn({ instance: spec.name, sha256: artifact.sha256, reason: err.message }, 'artifact refused');
        this.setStatus(spec, job, { phase: 'failed', sha256: artifact.sha256, reason: err.message });
      } else {
        const delay = Math.min(1_000 * 2 ** job.failures++, MAX_BACKOFF_MS);
        const reason = (err as Error).message;
        this.opts.log.warn({ instance: spec.name, sha256: artifact.sha256, err: reason, retryInMs: delay }, 'preparing artifact failed');
        this.setStatus(spec, job, { phase: 'failed', sha256: artifact.sha256, reason, retryAt: Date.now() + delay });
        job.timer = setTimeout(() => void this.run(spec, job), delay);
        job.timer.unref();
      }
    } finally {
      job.running = false;
      this.opts.onSettled();
    }
  }

  /** Keeps the new version and the one before it (still serving during a rollout); removes the rest. */
  private removeOlderVersions(instanceId: string, current: string): void {
    const root = join(this.opts.dataDir, 'apps', instanceId);
    const previous = this.previousDir.get(instanceId);
    for (const d of readdirSync(root, { withFileTypes: true })) {
      const path = join(root, d.name);
      if (d.isDirectory() && !d.name.includes('.tmp-') && path !== current && path !== previous)
        rmSync(path, { recursive: true, force: true });
    }
    this.previousDir.set(instanceId, current);
  }

  private readonly previousDir = new Map<string, string>();

  private setStatus(spec: InstanceSpec, job: Job, status: PrepareStatus): void {
    job.status = status;
    this.opts.onStatus(spec, status);
  }

  /** The instance was deleted: forget it and remove its code. */
  forget(instanceId: string): void {
    const job = this.jobs.get(instanceId);
    if (job?.timer) clearTimeout(job.timer);
    this.jobs.delete(instanceId);
    this.previousDir.delete(instanceId);
    rmSync(join(this.opts.dataDir, 'apps', instanceId), { recursive: true, force: true });
  }

  /** Instances this preparer holds state or files for. */
  known(): string[] {
    const onDisk = readdirSync(join(this.opts.dataDir, 'apps'));
    return [...new Set([...this.jobs.keys(), ...onDisk])];
  }

  stop(): void {
    this.stopped = true;
    for (const job of this.jobs.values()) if (job.timer) clearTimeout(job.timer);
  }
}
