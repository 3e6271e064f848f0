/**
 * The driver contract (test/helpers/driver-contract.ts) against every driver the agent holds: `process` in
 * the sandbox (this suite runs as root with bubblewrap), `process` on the host (a node that cannot sandbox,
 * for trusted owners), `wasm` in a real wasm host process, and `vm` (QEMU, TCG here: every replica a boot of
 * the node's image, so its replicas get a longer start bound). The wasm compile cache is shared with the
 * wasm host suite across runs (a compile takes 20–60 s, a cache hit milliseconds). Run `npm run build` first.
 */
import { cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { generateKeyPair } from '../../protocol/signing.js';
import { ProcessDriver } from '../../quorum-agent/drivers/process.js';
import { VmDriver } from '../../quorum-agent/drivers/vm.js';
import type * as WasmDriverModule from '../../quorum-agent/drivers/wasm.js';
import { scopeName } from '../../quorum-agent/sandbox/cgroups.js';
import { Sandbox } from '../../quorum-agent/sandbox/sandbox.js';
import { probeSandbox } from '../../quorum-agent/sandbox/support.js';
import { UidAllocator } from '../../quorum-agent/sandbox/uids.js';
import { chooseAccel, hostFacts } from '../../quorum-agent/vm/accel.js';
import { hashSource } from '../../quorum-agent/wasm/compile.js';
import { driverContract } from '../helpers/driver-contract.js';
import { tempDir } from '../helpers/tmp.js';

const APP = fileURLToPath(new URL('../fixtures/contract-app/', import.meta.url));
const WASM_CACHE = join(tmpdir(), 'allegra-wasm-test-cache');
/** The wasm runtime forks its compiler and host from files next to it: it runs from the build output. */
const WASM_DRIVER = fileURLToPath(new URL('../../dist/quorum-agent/drivers/wasm.js', import.meta.url));
const WASM_COMPILE = fileURLToPath(new URL('../../dist/quorum-agent/wasm/compile.js', import.meta.url));
const log = pino({ level: 'silent' });

function copyApp(root: string): { workDir: string; artifact: string } {
  const workDir = join(root, 'app');
  cpSync(APP, workDir, { recursive: true });
  return { workDir, artifact: hashSource(workDir) };
}

driverContract('process, sandboxed', { exec: { sandboxed: true }, limits: true }, async () => {
  const support = probeSandbox();
  if (!support.ok) throw new Error(`this suite needs a host that can sandbox (root, bubblewrap, socat): ${support.reason}`);
  const dir = tempDir('allegra-contract-sbx-');
  const root = join(dir.path, 'sandbox');
  const sandbox = new Sandbox(
    support,
    root,
    new UidAllocator(join(root, 'uids.json'), { first: 230_000, count: 100 }),
    scopeName(`contract-${process.pid}`),
    log,
  );
  await sandbox.open();
  const driver = new ProcessDriver({ support, sandbox, dataRoot: root });
  return {
    driver,
    ...copyApp(dir.path),
    logDir: join(dir.path, 'logs'),
    cleanup: async () => {
      await driver.close();
      dir.cleanup();
    },
  };
});

driverContract('process, on the host (trusted owner, no sandbox)', { exec: { sandboxed: false }, limits: false }, async () => {
  const dir = tempDir('allegra-contract-host-');
  const driver = new ProcessDriver({
    support: { ok: false, reason: 'not sandboxing in this suite' },
    policy: { allowUnsandboxed: true },
    dataRoot: join(dir.path, 'data'),
  });
  return { driver, ...copyApp(dir.path), logDir: join(dir.path, 'logs'), cleanup: async () => dir.cleanup() };
});

driverContract('wasm', { exec: false, limits: true }, async () => {
  const { WasmDriver } = (await import(WASM_DRIVER)) as typeof WasmDriverModule;
  const { compileApp } = (await import(WASM_COMPILE)) as typeof import('../../quorum-agent/wasm/compile.js');
  const dir = tempDir('allegra-contract-wasm-');
  const app = copyApp(dir.path);
  // Compiled here, before the first start, so the tests time replicas rather than one compile.
  await compileApp({ source: app.workDir, cacheDir: WASM_CACHE, sha256: app.artifact, timeoutMs: 280_000 });
  const driver = new WasmDriver({ dataDir: join(dir.path, 'wasm'), cacheDir: WASM_CACHE, log });
  return {
    driver,
    ...app,
    logDir: join(dir.path, 'logs'),
    cleanup: async () => {
      await driver.close();
      dir.cleanup();
    },
  };
});

// The VM is its own root: commands run as root in it (not sandboxed in the uid sense), and its memory limit is
// the VM's RAM (-m), so the hog is the guest's OOM killer's business, never the sibling's.
driverContract('vm (QEMU)', { exec: { sandboxed: false }, limits: true, startupMs: 240_000 }, async () => {
  const dir = tempDir('allegra-contract-vm-');
  const driver = new VmDriver({
    dir: join(dir.path, 'vm'),
    // One image per machine and run of the suite's inputs, like the wasm cache.
    imagesDir: join(tmpdir(), 'allegra-vm-test-images'),
    nodeKey: generateKeyPair(),
    accel: chooseAccel(hostFacts()),
    log,
  });
  await driver.ensureImage();
  return { driver, ...copyApp(dir.path), logDir: join(dir.path, 'logs'), cleanup: async () => dir.cleanup() };
});
