#!/usr/bin/env bash
# The Debian packages some tests need, installed when missing (the README's test command runs
# this first). Without them those tests skip and say why; so does a machine without apt-get
# or root, where this script only says what is missing.
#   nc (netcat-openbsd), socat          the shell client's tests talk to the daemon through them
#   slurm-wlm, munge                    a private single-node Slurm (tests/slurm/cluster.py)
#   mariadb-server, slurmdbd            the same Slurm with accounting (sacct)
set -uo pipefail

missing=()
command -v nc >/dev/null || missing+=(netcat-openbsd)
command -v socat >/dev/null || missing+=(socat)
[ -x /usr/sbin/slurmctld ] || missing+=(slurm-wlm)
[ -x /usr/sbin/munged ] || missing+=(munge)
[ -x /usr/sbin/slurmdbd ] || missing+=(slurmdbd)
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "note: not installed: ${missing[*]} (needs root and apt-get); the tests that need" \
        "them will skip" >&2
    exit 0
fi
echo "installing Debian packages for the tests: ${missing[*]}" >&2
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "warning: could not install ${missing[*]}; the tests that need them will skip" >&2
fi
exit 0
