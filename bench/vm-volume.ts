/**
 * What replicating a VM's disk costs the VM (issue 18): a vm instance's disk image is its volume, captured
 * while QEMU is stopped (every thread), so the capture time of a changed image is how long the VM is paused
 * per snapshot. Measured on a 1 GiB ext4 image (the default `--disk`) with 32 MiB written in it, as a guest
 * leaves it: the first capture (every chunk new), then the steady state (a few blocks changed in place, the
 * whole image read again), the same with the image staged first (the driver's way: the VM is paused only
 * for a sparse copy), and a restore (what a member taking over writes before the VM boots). Peers in the
 * same run, over the same file: `sha256sum` (hashing the whole image, holes included) and `cp --sparse=always`
 * (a snapshot by copy).
 *
 *   npm run build && node dist/bench/vm-volume.js [--runs 5] [--disk-mb 1024]
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDisk } from '../quorum-agent/vm/disk.js';
import { type CaptureIndex, capture } from '../quorum-agent/volume/capture.js';
import { ChunkStore } from '../quorum-agent/volume/chunks.js';
import { DEFAULT_VOLUME_LIMITS } from '../quorum-agent/volume/layout.js';
import { restore } from '../quorum-agent/volume/restore.js';
import { stageFiles } from '../quorum-agent/volume/stage.js';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const ms = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${Math.round(x)} ms`);

function timed(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

async function timedAsync(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Writes `bytes` of random data at `count` random 4 KiB-aligned places (a guest's writes). */
function scribble(file: string, sizeBytes: number, count: number, bytes: number): void {
  const fd = openSync(file, 'r+');
  try {
    for (let i = 0; i < count; i++) {
      const at = Math.floor(Math.random() * ((sizeBytes - bytes) / 4096)) * 4096;
      writeSync(fd, randomBytes(bytes), 0, bytes, at);
    }
  } finally {
    closeSync(fd);
  }
}

async function main(): Promise<void> {
  const runs = arg('--runs', 5);
  const diskMb = arg('--disk-mb', 1024);
  const size = diskMb * 1024 * 1024;
  const dir = mkdtempSync(join(tmpdir(), 'allegra-bench-vmvol-'));
  const load = loadavg()[0] as number;
  try {
    const live = join(dir, 'live');
    mkdirSync(live);
    const disk = join(live, 'disk.img');
    ensureDisk(disk, diskMb, dir);
    scribble(disk, size, 32, 1024 * 1024);
    const limits = { ...DEFAULT_VOLUME_LIMITS, maxBytes: size + 16 * 1024 * 1024 };
    const store = new ChunkStore(join(dir, 'chunks'));
    let index: CaptureIndex = new Map();
    let manifest = (await capture(live, 'bench', index, store, { limits })).manifest;
    const first = await timedAsync(async () => {
      // A fresh store: every chunk new (the first snapshot after the disk was made).
      rmSync(join(dir, 'chunks'), { recursive: true, force: true });
      const fresh = new ChunkStore(join(dir, 'chunks'));
      const cap = await capture(live, 'bench', new Map(), fresh, { limits });
      fresh.flush();
      index = cap.index;
      manifest = cap.manifest;
    });
    const steady: number[] = [];
    const hashAll: number[] = [];
    const copy: number[] = [];
    const restores: number[] = [];
    const stagedPause: number[] = [];
    const stagedCapture: number[] = [];
    const copyStore = new ChunkStore(join(dir, 'chunks'));
    for (let r = 0; r < runs; r++) {
      scribble(disk, size, 4, 64 * 1024);
      steady.push(
        await timedAsync(async () => {
          const cap = await capture(live, 'bench', index, copyStore, { limits });
          copyStore.flush();
          index = cap.index;
          manifest = cap.manifest;
        }),
      );
      // What the vm driver does (stage.ts): paused for the copy only, the copy captured with the VM running.
      scribble(disk, size, 4, 64 * 1024);
      const stage = join(dir, 'stage');
      stagedPause.push(await timedAsync(() => stageFiles(live, stage)));
      stagedCapture.push(
        await timedAsync(async () => {
          await capture(stage, 'bench', new Map(), copyStore, { limits, holes: true });
          // As the volume does: the copy goes before the chunks are made durable (no need to write it out).
          rmSync(stage, { recursive: true, force: true });
          copyStore.flush();
        }),
      );
      index = (await capture(live, 'bench', new Map(), copyStore, { limits })).index;
      hashAll.push(timed(() => execFileSync('sha256sum', [disk], { stdio: 'ignore' })));
      copy.push(timed(() => execFileSync('cp', ['--sparse=always', disk, join(dir, 'copy.img')], { stdio: 'ignore' })));
      rmSync(join(dir, 'copy.img'), { force: true });
      restores.push(timed(() => restore(manifest, copyStore, join(dir, 'restored'))));
    }
    const allocated = statSync(join(dir, 'restored', 'disk.img')).blocks * 512;
    const rows: Array<[string, number[]]> = [
      ['capture, first (every chunk new)', [first]],
      ['capture in place, steady state (4 × 64 KiB changed): the VM would be paused for all of it', steady],
      ['staged (what the driver does): the VM’s pause, a sparse copy of the image', stagedPause],
      ['staged: capture of the copy, the VM running', stagedCapture],
      ['peer: `sha256sum` of the image', hashAll],
      ['peer: `cp --sparse=always` of the image (snapshot by copy)', copy],
      ['restore (a member taking over, before the boot)', restores],
    ];
    console.log(
      `Generated by \`node dist/bench/vm-volume.js --runs ${runs} --disk-mb ${diskMb}\` on ${new Date().toISOString()}; ` +
        `a ${diskMb} MiB ext4 image with 32 MiB written; 1-min load average before / after: ${load.toFixed(2)} / ${(loadavg()[0] as number).toFixed(2)}.\n`,
    );
    console.log('| measure | median | runs |');
    console.log('| :-- | --: | :-- |');
    for (const [what, xs] of rows) console.log(`| ${what} | ${ms(median(xs))} | ${xs.map(ms).join(', ')} |`);
    console.log(`\nRestored image: ${diskMb} MiB apparent, ${(allocated / 1024 / 1024).toFixed(1)} MiB allocated (holes kept).`);
    console.log(`Chunks held: ${copyStore.list().length} (of ${size / (256 * 1024)} in the image).`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
