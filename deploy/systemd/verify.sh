#!/bin/sh
# Verify the units in this folder with systemd-analyze, as installed on a host.
#
# `systemd-analyze verify` loads the units the way systemd would and checks, among others,
# every directive, the dependencies, and that each ExecStart= program exists and is
# executable. It runs on a throwaway root (--root): the units go to /etc/systemd/system, the
# host's own units (sysinit.target, ...) to /usr/lib/systemd/system, the environment file to
# /etc/kommo-sync/env, and an executable stand-in to /opt/kommo-sync/current/bin/kommo-sync,
# the path the units run (where docs/operations.md installs the virtual environment).
# It warns about a misspelt directive or value and carries on with exit code 0, so any output
# at all fails this check. Then `systemd-analyze security` scores each unit's sandboxing and
# fails above THRESHOLD, in tenths of its 0-10 scale (15: above 1.5; 0 = fully sandboxed).
# The sysusers.d file is applied to the same root and must create the kommo-sync user.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
threshold=${THRESHOLD:-15}
units="kommo-sync.target kommo-sync-release.service kommo-sync-web@8000.service kommo-sync-worker@9101.service"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/etc/kommo-sync" \
    "$root/opt/kommo-sync/current/bin"
cp -R /usr/lib/systemd/system "$root/usr/lib/systemd/system"
cp "$here"/*.service "$here"/*.target "$root/etc/systemd/system/"
cp "$here/env.example" "$root/etc/kommo-sync/env"
printf '#!/bin/sh\nexit 0\n' >"$root/opt/kommo-sync/current/bin/kommo-sync"
chmod 0755 "$root/opt/kommo-sync/current/bin/kommo-sync"

systemd-sysusers --root="$root" "$here/kommo-sync.sysusers.conf" >/dev/null 2>&1
grep -q '^kommo-sync:' "$root/etc/passwd" || {
    echo "kommo-sync.sysusers.conf created no kommo-sync user" >&2
    exit 1
}

out=$(systemd-analyze verify --man=no --root="$root" $units 2>&1) || {
    printf '%s\n' "$out"
    echo "systemd-analyze verify failed" >&2
    exit 1
}
if [ -n "$out" ]; then
    printf '%s\n' "$out"
    echo "systemd-analyze verify printed warnings" >&2
    exit 1
fi
echo "systemd-analyze verify: $units: ok"

for unit in kommo-sync-release.service kommo-sync-web@8000.service kommo-sync-worker@9101.service; do
    report=$(systemd-analyze security --offline=yes --root="$root" --threshold="$threshold" \
        "$unit" 2>&1) || {
        printf '%s\n' "$report"
        echo "$unit: exposure above $threshold" >&2
        exit 1
    }
    printf '%s\n' "$report" | tail -n 1
done
