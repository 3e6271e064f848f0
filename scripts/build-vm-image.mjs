#!/usr/bin/env node
// Builds the vm driver's image (quorum-agent/vm/image.ts) into DIR, as an agent does on its first VM start,
// from the Debian packages scripts/install-deps.mjs installs. Needs `npm run build` first.
//   node scripts/build-vm-image.mjs [DIR]     (default: ./.allegra-vm-images)
import { buildImage } from '../dist/quorum-agent/vm/image.js';

const dir = process.argv[2] ?? '.allegra-vm-images';
const started = Date.now();
try {
  const image = await buildImage(dir);
  console.log(JSON.stringify({ ...image, ms: Date.now() - started }));
} catch (err) {
  console.error(`build-vm-image: ${err.message}`);
  process.exit(1);
}
