/**
 * PID 1 of every VM replica (busybox sh). It reads everything per boot from the seed disk the driver writes
 * (label `allegra-seed`, read-only, cloud-init's NoCloud idea): the owner's and team keys, the SSH host key,
 * the hostname, the app's files, command and environment. The instance's volume (label `allegra-data`) is
 * mounted on /data with a 1 s journal commit, so a killed VM loses at most the last second of writes. The
 * app runs in the foreground; when it exits the VM reboots, which ends QEMU (-no-reboot), and the agent's supervisor
 * restarts the replica like any other that exited. Lines starting with `allegra-vm:` go to the console
 * (the replica's log) and mark the boot's progress.
 */
export const GUEST_INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
say() { echo "allegra-vm: $*"; }
# The kernel runs without ACPI (acpi=off, qemu.ts), so it cannot power off: a reboot ends QEMU (-no-reboot).
off() { sync; reboot -f; }
while read -r m; do [ -n "$m" ] && insmod "/lib/modules/$m" 2>/dev/null; done < /lib/modules/order
# virtio devices are probed asynchronously: wait (bounded) for the seed.
i=0
until seed=$(findfs LABEL=allegra-seed 2>/dev/null); do
  i=$((i + 1)); [ $i -gt 300 ] && { say "no seed disk"; off; }; sleep 0.1
done
mount -t ext4 -o ro "$seed" /seed || { say "cannot mount the seed"; off; }
if data=$(findfs LABEL=allegra-data 2>/dev/null); then
  mount -t ext4 -o commit=1 "$data" /data || say "cannot mount the volume"
fi
hostname "$(cat /seed/hostname)"
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
cp /seed/authorized_keys /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
mkdir -p /etc/dropbear
dropbear -r /seed/host_key -p 22 -s -j -k -E 2>&1 && say "ssh ready"
mount --bind /seed/app /app
. /seed/env
# The host's forward lands on eth0; apps listen on 127.0.0.1:$PORT as in any replica, so pass it on.
node /usr/lib/allegra/relay.cjs &
cd /app
say "app starting on port $PORT: $(cat /seed/cmd)"
sh -c "$(cat /seed/cmd)"
say "app exited with code $?"
off
`;

/** The guest-side relay: eth0:RELAY → 127.0.0.1:$PORT, one TCP connection per connection, half-closes kept. */
export const GUEST_RELAY = `'use strict';
const net = require('node:net');
const port = Number(process.env.PORT);
net
  .createServer({ allowHalfOpen: true }, (c) => {
    const u = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  })
  .listen(Number(process.env.ALLEGRA_VM_RELAY_PORT), '10.0.2.15');
`;
