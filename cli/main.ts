#!/usr/bin/env node
import { existsSync } from 'node:fs';
/** The `allegra` command (contract: CLI.md). */
import { Command, CommanderError, Option } from 'commander';
import { ensureKey, keyPath, loadKey } from './config.js';
import { checkName, type GlobalOpts } from './names.js';
import { CliError, makeOutput, reportError } from './output.js';

// Each command's module is imported when that command runs: `allegra status` does not load the gateway,
// the certificate machinery or the devnet (a third of a second per call on a quiet machine, seconds on a busy one).
const program = new Command('allegra')
  .description('Host apps on a decentralized network of operator machines.')
  .version('0.1.0')
  .option('--json', 'print one JSON document on stdout')
  .option('--rpc <url>', 'agent RPC endpoint (default: $ALLEGRA_RPC, then the devnet config)')
  .option('--key <file>', 'Ed25519 key file (default: $ALLEGRA_KEY, then ~/.allegra/key)')
  // A usage error is one line on stderr (CLI.md), pointing at the help.
  .configureOutput({
    outputError: (text, write) =>
      write(
        `allegra: ${
          text
            .trim()
            .replace(/^error: /, '')
            .split('\n')[0]
        } (see allegra --help)\n`,
      ),
  })
  // Options before the subcommand belong to the program, after it to the subcommand: this lets
  // `allegra devnet --rpc 7070` (a port) coexist with `allegra list --rpc URL`.
  .enablePositionalOptions()
  .exitOverride();

/** Adds the global options to a subcommand so they can also follow it (`allegra list --json`). */
function withGlobals(cmd: Command, opts: { rpc?: boolean } = {}): Command {
  cmd.option('--json', 'print one JSON document on stdout');
  if (opts.rpc !== false) cmd.option('--rpc <url>', 'agent RPC endpoint');
  cmd.option('--key <file>', 'Ed25519 key file');
  return cmd;
}

let current: Command = program;
program.hook('preAction', (_root, action) => {
  current = action;
});
const globals = (): GlobalOpts => {
  const mine = current.opts<GlobalOpts & { rpc?: string }>();
  const root = program.opts<GlobalOpts>();
  const isDevnet = current.name() === 'devnet';
  return { json: Boolean(root.json || mine.json), rpc: isDevnet ? root.rpc : (mine.rpc ?? root.rpc), key: mine.key ?? root.key };
};
const out = () => makeOutput(Boolean(globals().json));

program
  .command('devnet')
  .description('run a local network: embedded registry, agents, a gateway and the demo app')
  .option('--agents <n>', 'number of quorum agents', '3')
  .option('--http <port>', 'gateway HTTP port', '8080')
  .option('--https <port>', 'gateway HTTPS port (certificates from a local CA, or ACME with --acme-directory)', '8443')
  .option('--acme-directory <url>', 'get certificates from this ACME directory instead of the local CA')
  .option('--acme-ca <file>', 'CA bundle that signs the ACME server’s own HTTPS certificate')
  .option('--rpc <port>', 'RPC port of the first agent; the others use the next ports (0: any free port)', '7070')
  .option('--admin <port>', 'gateway admin port (/healthz, /readyz, /metrics)', '9090')
  .option('--data <dir>', 'data directory (default: ~/.allegra/devnet)')
  .option('--registry <url>', 'registry URL (default: embedded:<data>/registry)')
  .option('--registry-credentials <file>', 'etcd with auth: the admin credentials file of `allegra registry setup-auth`')
  .option('--base-domain <domain>', 'domain under which instances get their names', 'localhost')
  .option('--no-demo', 'do not deploy the demo app')
  .option('--wasm-cache <dir>', 'compile cache of wasm apps shared by the agents (default <data>/wasm-cache)')
  .option('--drivers <list>', 'drivers the agents offer, comma-separated (process, wasm, vm)', 'process,wasm')
  .addOption(new Option('--vm-accel <accel>', 'accelerator of vm replicas').choices(['auto', 'kvm', 'tcg']).default('auto'))
  .action(async (o) => (await import('./devnet.js')).devnetCommand({ ...o, key: globals().key }, out()));

program
  .command('agent')
  .description('run one quorum agent')
  .requiredOption('--registry <url>', 'embedded:DIR or etcd://host:port[,host:port…]')
  .option('--listen <host:port>', 'RPC listen address', '127.0.0.1:7070')
  .option('--advertise <host>', 'host other machines reach this node at (RPC and ingress; default: the --listen host)')
  .option('--ingress-port <port>', 'node ingress port on the listen host, for gateways on other machines (0: any free port)', '0')
  .option('--data <dir>', 'data directory', '.allegra/agent')
  .option('--region <region>', 'region label used to spread quorums', 'local')
  .option('--capacity <n>', 'replica slots offered', '16')
  .option('--dns-resolver <host:port>', 'DNS server for custom-domain proofs (default: the system resolver)')
  .option('--registry-role <role>', 'registry role to act as (picks the credential)', 'agent')
  .option('--registry-credentials <file>', 'etcd with auth: credentials file (default: $ALLEGRA_REGISTRY_CREDENTIALS)')
  .option(
    '--uid-range <first-last>',
    'uids (and gids) for sandboxed instances, one each; agents sharing a host need disjoint ranges',
    '200000-209999',
  )
  .option(
    '--trusted-owner <key>',
    'if this host cannot sandbox, still run this owner’s instances (unsandboxed); repeatable',
    (v: string, all: string[]) => [...all, v],
    [] as string[],
  )
  .option('--allow-unsandboxed', 'if this host cannot sandbox, run every instance unsandboxed (tenant code then runs as the agent)')
  .option('--drivers <list>', 'drivers this node offers, comma-separated (process, wasm, vm)', 'process,wasm')
  .addOption(
    new Option('--vm-accel <accel>', 'accelerator of vm replicas (auto: KVM where it works, else TCG)')
      .choices(['auto', 'kvm', 'tcg'])
      .default('auto'),
  )
  .option('--vm-images <dir>', 'image cache of vm replicas; agents on one machine may share one (default <data>/vm/images)')
  .option('--wasm-cache <dir>', 'compile cache of wasm apps; agents on one machine may share one (default <data>/wasm/cache)')
  .option('--ssh-port <port>', 'SSH server for sessions inside this node’s replicas, on the listen host (0: any free port)', '0')
  .option('--log <file>', 'write logs to a file instead of stderr')
  .action(async (o) => (await import('./daemon-commands.js')).agentCommand({ ...o, json: globals().json }));

program
  .command('gateway')
  .description('run one responding node')
  .requiredOption('--registry <url>', 'embedded:DIR or etcd://host:port[,host:port…]')
  .option('--http <port>', 'HTTP port', '8080')
  .option('--admin <port>', 'admin port (/healthz, /readyz, /metrics)', '9090')
  .option('--host <address>', 'listen address', '127.0.0.1')
  .option('--workers <n>', 'gateway processes sharing the ports ("auto": one per core)', '1')
  .option('--https <port>', 'HTTPS port (HTTP/2 and HTTP/1.1), served when a certificate is given', '8443')
  .option('--tls-cert <file>', 'PEM certificate chain for HTTPS')
  .option('--tls-key <file>', 'PEM private key for HTTPS')
  .option('--proxy-protocol', 'require a PROXY protocol v1/v2 header on HTTP connections (behind a load balancer)')
  .option('--trust-proxy <list>', 'comma-separated addresses or IPv4 CIDRs whose X-Forwarded-* headers are kept')
  .option('--no-h2c', 'do not accept HTTP/2 with prior knowledge on the HTTP port')
  .option('--no-access-log', 'do not log one line per request')
  .option('--config <file>', 'JSON file with limits, retry/timeout policy and health-check settings (see docs/ARCHITECTURE.md)')
  .option('--acme-directory <url>', 'ACME directory for certificates of exposed routes (e.g. Let’s Encrypt, Pebble)')
  .option('--acme-ca <file>', 'CA bundle that signs the ACME server’s own HTTPS certificate')
  .option('--acme-email <address>', 'contact address of the ACME account')
  .option('--acme-challenge <type>', 'preferred ACME challenge: http-01 or tls-alpn-01', 'http-01')
  .option('--local-ca <dir>', 'issue certificates from a local CA kept in this directory (development)')
  .option('--cert-validity <seconds>', 'lifetime of local-CA certificates (default 7 days)')
  .option('--registry-role <role>', 'registry role to act as (picks the credential)', 'gateway')
  .option('--registry-credentials <file>', 'etcd with auth: credentials file (default: $ALLEGRA_REGISTRY_CREDENTIALS)')
  .option('--log <file>', 'write logs to a file instead of stderr')
  .action(async (o) => (await import('./daemon-commands.js')).gatewayCommand({ ...o, json: globals().json }));

const registryCmd = program.command('registry').description('operate the registry');
registryCmd
  .command('setup-auth')
  .description('enable etcd auth with one user per registry role (admin, agent, gateway); safe to run again')
  .requiredOption('--registry <url>', 'etcd://host:port[,host:port…]')
  .option('--credentials <dir>', 'where to write the credentials files (default: ~/.allegra/registry-credentials)')
  .option('--json', 'print one JSON document on stdout')
  .action(async (o) => (await import('./registry-commands.js')).setupAuthCommand(o, out()));

const edgeCmd = program.command('edge').description('the gateway on Cloudflare Workers (wrangler.toml deploys it)');
edgeCmd
  .command('dev')
  .description('run the Workers edge locally in workerd, fed from a registry, forwarding to Node gateways')
  .requiredOption('--registry <url>', 'embedded:DIR or etcd://host:port[,host:port…]')
  .option('--port <port>', 'port to serve on', '8787')
  .option('--host <address>', 'listen address', '127.0.0.1')
  .option('--origin <url>', 'a Node gateway to forward to (repeatable; default http://127.0.0.1:8080)', (v: string, acc: string[] = []) => [
    ...acc,
    v,
  ])
  .option('--edge-token-file <file>', 'the secret shown to the origins (created when missing; name it in their edgeTokenFile)')
  .option('--registry-role <role>', 'registry role to act as (picks the credential)', 'gateway')
  .option('--registry-credentials <file>', 'etcd with auth: credentials file (default: $ALLEGRA_REGISTRY_CREDENTIALS)')
  .option('--log <file>', 'write logs to a file instead of stderr')
  .action(async (o) => (await import('./edge-command.js')).edgeDevCommand(o));

const keysCmd = program.command('keys').description('manage your Ed25519 key');
keysCmd
  .command('init')
  .description('create your key (kept if it already exists)')
  .action(() => {
    const path = keyPath(globals().key);
    const existed = existsSync(path);
    const { keyPair } = ensureKey(path);
    out().result(
      { publicKey: keyPair.publicKeyHex, path, created: !existed },
      () => `${existed ? 'key already exists' : 'created key'} ${path}\npublic key: ${keyPair.publicKeyHex}`,
    );
  });
keysCmd
  .command('show')
  .description('print your public key (hex)')
  .action(() => {
    const keyPair = loadKey(globals().key);
    out().result({ publicKey: keyPair.publicKeyHex, path: keyPath(globals().key) }, () => keyPair.publicKeyHex);
  });

program
  .command('create <name>')
  .description('provision an instance; prints its id')
  .addOption(new Option('--driver <driver>', 'instance driver').choices(['process', 'wasm', 'vm']).default('process'))
  .option('--replicas <min:max>', 'replica bounds (default: one per quorum member; 1:1 with --volume or --driver vm)')
  .option('--from <path>', 'deploy this directory or file right away')
  .option('--cmd <command>', 'command that starts one replica (PORT is set)')
  .option('--port <port>', 'port the app listens on (default: $PORT)')
  .option('--memory <MiB>', 'memory limit of each replica (default 512)')
  .option('--pids <n>', 'process and thread limit of each replica (default 1024)')
  .option('--cpu-shares <n>', 'relative CPU weight of each replica (default 1024)')
  .option(
    '--volume',
    'one replica writes a volume (ALLEGRA_VOLUME_DIR) replicated to every quorum member; another takes over if it is lost',
  )
  .option('--vcpus <n>', 'virtual CPUs of the VM (driver vm; default 1)')
  .option('--disk <MiB>', "size of the VM's disk, the instance's replicated volume (driver vm; default 1024)")
  .option('--sticky <mode>', 'session affinity: "cookie" (the gateway sets one), "cookie:NAME" (the app\'s own) or "header:NAME"')
  .action(async (name, o) => (await import('./instance-commands.js')).createCommand(name, o, globals(), out()));

program
  .command('deploy <name> <path>')
  .description('upload code (directory or file) and roll it out to the whole quorum')
  .option('--cmd <command>', 'command that starts one replica (PORT is set)')
  .option('--no-wait', 'return once the quorum holds the code, without waiting for the rollout')
  .action(async (name, path, o) => (await import('./instance-commands.js')).deployCommand(name, path, o, globals(), out()));

program
  .command('list')
  .description('your instances')
  .action(async () => (await import('./instance-commands.js')).listCommand(globals(), out()));
program
  .command('status <name>')
  .description('one instance with its quorum, replicas, versions and routes')
  .action(async (name) => (await import('./instance-commands.js')).statusCommand(name, globals(), out()));
program
  .command('expose <name>')
  .description('route a public HTTPS name to an instance and get its certificate; prints the https URL')
  .option('--port <port>', 'checked against the port the app listens on inside its replica (its --port, else $PORT: 3000)')
  .option('--domain <domain>', 'a custom domain you control (prove it with the DNS TXT record or HTTP token named on first try)')
  .option('--no-redirect', 'keep serving plain HTTP instead of redirecting it to HTTPS')
  .option('--no-wait', 'return once the route exists, without waiting for the certificate')
  .option('--timeout <seconds>', 'how long to wait for the certificate', '90')
  .action(async (name, o) => (await import('./expose-command.js')).exposeCommand(checkName(name), o, globals(), out()));

program
  .command('scale <name>')
  .description('autoscaling bounds: the autoscaler keeps MIN..MAX replicas at TARGET requests in flight each; --min 0 sleeps when idle')
  .requiredOption('--min <n>', 'fewest replicas (0: scale to zero after --idle seconds without traffic)')
  .requiredOption('--max <n>', 'most replicas')
  .option('--target <c>', 'requests in flight per replica to aim for (default 100)')
  .option('--idle <seconds>', 'with --min 0: seconds without a request before the last replica stops (default 30)')
  .option('--window <seconds>', 'stable window of the autoscaler (default 60; the panic window is a tenth of it)')
  .action(async (name, o) => (await import('./scale-command.js')).scaleCommand(name, o, globals(), out()));

for (const action of ['start', 'stop', 'delete'] as const) {
  program
    .command(`${action} <name>`)
    .description(`${action} an instance`)
    .action(async (name) => (await import('./instance-commands.js')).lifecycleCommand(action, name, globals(), out()));
}

const authCmd = program.command('auth').description('team keys: who may operate an instance besides its owner');
authCmd
  .command('add <name> <pubkey>')
  .description('let a key operate the instance (hex as `allegra keys show` prints it, or an ssh-ed25519 line); owner only')
  .action(async (name, key) => (await import('./team-commands.js')).authCommand('add', name, key, globals(), out()));
authCmd
  .command('remove <name> <pubkey>')
  .description('refuse a team key from now on (SSH included); owner only')
  .action(async (name, key) => (await import('./team-commands.js')).authCommand('remove', name, key, globals(), out()));
authCmd
  .command('list <name>')
  .description('the owner and team keys')
  .action(async (name) => (await import('./team-commands.js')).authCommand('list', name, undefined, globals(), out()));

program
  .command('ssh <name> [command...]')
  .description('a shell (or, after --, one command) inside a replica’s sandbox; --print shows the plain ssh command')
  .option('--print', 'print the ssh command line (host, port, user, key) instead of connecting')
  .option('--replica <n>', 'the replica to land on (default: a healthy one)')
  .action(async (name, command, o) => (await import('./ssh-command.js')).sshCommand(checkName(name), command, o, globals(), out()));

program
  .command('logs <name>')
  .description('stdout and stderr of every replica on every quorum member, merged by time')
  .option('--follow', 'keep printing lines as they come (with --json: one JSON object per line)')
  .option('--since <duration>', 'only lines after this: 30s, 10m, 2h, 1d, or a date')
  .option('--tail <n>', 'at most the last N lines (default 1000)')
  .action(async (name, o) => (await import('./logs-command.js')).logsCommand(checkName(name), o, globals(), out()));

program
  .command('rollback <name> <version>')
  .description('put the code of an earlier version back (the last 3 are kept), as a new version')
  .action(async (name, version) => (await import('./instance-commands.js')).rollbackCommand(checkName(name), version, globals(), out()));

program
  .command('ui')
  .description('the web dashboard: prints its URL with a short-lived sign-in for your key (your key stays here)')
  .option('--open', 'open it in a browser (default where a display and a browser exist)')
  .option('--print', 'only print the URL')
  .option('--ttl <duration>', 'how long the sign-in lasts: 1m to 12h (default 1h)')
  .action(async (o) => (await import('./ui-command.js')).uiCommand(o, globals(), out()));

program
  .command('history <name>')
  .description('every operation on the instance, who signed it, hash-chained')
  .option('--verify', 'check the chain, every signature and that each author was allowed (exit 1 if not)')
  .action(async (name, o) => (await import('./history-command.js')).historyCommand(name, o, globals(), out()));

program
  .command('usage <name>')
  .description('what each operator served for the instance: requests, bytes, CPU seconds, replica-hours (node-signed)')
  .action(async (name) => (await import('./usage-command.js')).usageCommand(name, globals(), out()));

program
  .command('verify <name>')
  .description('anyone (no key needed): check that a majority of the quorum serves the recorded artifact and spec')
  .action(async (name) => (await import('./verify-command.js')).verifyCommand(name, globals(), out()));

program
  .command('revoke <name>')
  .description('give up ownership: the instance keeps being served and becomes immutable')
  .option('--yes', 'confirm: this cannot be undone')
  .option('--governance <M:keys>', 'after it, a change needs M signatures of these keys (comma-separated); none: no change ever')
  .action(async (name, o) => (await import('./governance-commands.js')).revokeCommand(name, o, globals(), out()));

program
  .command('propose <name>')
  .description('governance of a revoked instance: propose one change (your signature counts as the first)')
  .option('--deploy <path>', 'deploy this directory or file')
  .option('--cmd <command>', 'with --deploy: the command that starts one replica')
  .option('--start', 'start the instance')
  .option('--stop', 'stop the instance')
  .option('--delete', 'delete the instance')
  .option('--governance <M:keys>', 'replace the governance policy')
  .action(async (name, o) => (await import('./governance-commands.js')).proposeCommand(name, o, globals(), out()));

program
  .command('approve <name> <proposal>')
  .description('sign a pending proposal; it is applied once M governance keys signed it')
  .action(async (name, id) => (await import('./governance-commands.js')).approveCommand(name, id, globals(), out()));

program
  .command('proposals <name>')
  .description('pending governance proposals and their signatures')
  .action(async (name) => (await import('./governance-commands.js')).proposalsCommand(name, globals(), out()));

for (const cmd of [...program.commands, ...keysCmd.commands, ...authCmd.commands]) {
  if (cmd === keysCmd || cmd === registryCmd || cmd === authCmd || cmd === edgeCmd) continue;
  withGlobals(cmd, { rpc: !['devnet', 'agent', 'gateway'].includes(cmd.name()) });
}

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version are not failures; usage errors were already printed by commander.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  process.exit(reportError(err instanceof CliError || err instanceof Error ? err : new Error(String(err))));
}
