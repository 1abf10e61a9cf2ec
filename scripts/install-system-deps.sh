#!/usr/bin/env bash
# Debian tools the tests and the demo use as real providers and probes. Idempotent; quiet when all present.
# `install-system-deps.sh demo` installs only what `make demo` uses (rust-coreutils, the provider).
set -euo pipefail
need=()
[ -x /usr/lib/cargo/bin/coreutils/ls ] || need+=(rust-coreutils)
if [ "${1:-all}" != demo ]; then
  command -v busybox >/dev/null || need+=(busybox)
  command -v lsattr >/dev/null || need+=(e2fsprogs)
  command -v setcap >/dev/null || need+=(libcap2-bin)
  command -v setfattr >/dev/null || need+=(attr)
  command -v setfacl >/dev/null || need+=(acl)
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null || need+=(openssh-client)
  command -v unshare >/dev/null || need+=(util-linux)
  command -v shellcheck >/dev/null || need+=(shellcheck)  # ansible-test sanity: shellcheck
  command -v strace >/dev/null || need+=(strace)  # make bench: counts fsync/fdatasync/syncfs calls
  [ -x /usr/bin/time ] || need+=(time)            # make bench: peak RSS of the module process (time -f %M)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
