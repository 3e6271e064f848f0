/** What every command needs before it loads its own module: the global options and the instance-name check. */
import { INSTANCE_NAME } from '../protocol/schemas.js';
import { CliError } from './output.js';

export interface GlobalOpts {
  rpc?: string;
  key?: string;
  json?: boolean;
}

/** Instance names are checked before anything is signed or sent: a bad one is a usage error (exit 2). */
export function checkName(name: string): string {
  if (!INSTANCE_NAME.test(name))
    throw new CliError(`invalid instance name "${name}": 1-63 characters of a-z, 0-9 and "-", not starting or ending with "-"`, 2);
  return name;
}
