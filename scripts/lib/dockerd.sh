# A private dockerd for the by-hand container checks (scripts/compose-smoke,
# scripts/fresh-machine-smoke). Source it after lib/common.sh; do not run it.
#
#   dockerd_start WORKDIR   installs docker.io when missing, starts dockerd with its
#                           socket, data, exec root and pidfile under WORKDIR, exports
#                           DOCKER_HOST and DOCKER_CONFIG (compose plugin linked in)
#   dockerd_stop            stops it by pid, puts the host network back as it was,
#                           unmounts what it left and removes WORKDIR
#   import_debian_base      debootstrap --variant=minbase bookworm (cached under
#                           .run/cache/) imported as hyperinfer/debian:bookworm
#   build_python_base       hyperinfer/python:3.11-bookworm from Debian's python3, with
#                           the host's CA bundle (HTTPS from builds may be re-signed)

DOCKERD_WORK=""
DOCKER_CLI=""
HAD_DOCKER0=1

docker() { "$DOCKER_CLI" "$@"; }

dockerd_start() { # workdir
  DOCKERD_WORK=$1
  command -v dockerd >/dev/null || apt_install docker.io
  # Debian's docker CLI matches its dockerd; else whatever docker is on PATH
  DOCKER_CLI=/usr/bin/docker
  [ -x "$DOCKER_CLI" ] || DOCKER_CLI=$(command -v docker) || die "no docker CLI"
  export DOCKER_HOST="unix://$DOCKERD_WORK/docker.sock" DOCKER_CONFIG="$DOCKERD_WORK/config"
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  ln -sf "$ROOT/.venv/bin/docker-compose" "$DOCKER_CONFIG/cli-plugins/docker-compose"
  # dockerd adds iptables chains, sets the FORWARD policy to DROP and makes docker0
  iptables-save >"$DOCKERD_WORK/iptables.before" 2>/dev/null || rm -f "$DOCKERD_WORK/iptables.before"
  ip link show docker0 >/dev/null 2>&1 && HAD_DOCKER0=1 || HAD_DOCKER0=""
  dockerd -H "$DOCKER_HOST" --data-root "$DOCKERD_WORK/data" --exec-root "$DOCKERD_WORK/exec" \
    --pidfile "$DOCKERD_WORK/docker.pid" >"$DOCKERD_WORK/dockerd.log" 2>&1 &
  local i
  for ((i = 0; i < 150; i++)); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
  docker version >/dev/null 2>&1 \
    || { tail -n 20 "$DOCKERD_WORK/dockerd.log" >&2; die "dockerd did not start"; }
  say "dockerd $(docker version -f '{{.Server.Version}}') pid $(cat "$DOCKERD_WORK/docker.pid")," \
    "storage $(docker info -f '{{.Driver}}'), state in $DOCKERD_WORK"
}

dockerd_stop() {
  [ -n "$DOCKERD_WORK" ] || return 0
  local pid i
  if pid=$(cat "$DOCKERD_WORK/docker.pid" 2>/dev/null) && kill -TERM "$pid" 2>/dev/null; then
    for ((i = 0; i < 150; i++)); do pid_alive "$pid" || break; sleep 0.2; done
    if pid_alive "$pid"; then
      say "dockerd $pid did not stop in 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  if [ -f "$DOCKERD_WORK/iptables.before" ]; then
    iptables-restore <"$DOCKERD_WORK/iptables.before" 2>/dev/null || say "iptables-restore failed"
  fi
  [ -n "$HAD_DOCKER0" ] || ip link delete docker0 2>/dev/null || true
  # anything dockerd left mounted under the work dir must go before the rm
  grep -o " $DOCKERD_WORK/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$DOCKERD_WORK"
  DOCKERD_WORK=""
}

import_debian_base() {
  local cache="$RUN_DIR/cache" tarball
  tarball="$cache/debian-bookworm-minbase.tar"
  mkdir -p "$cache"
  if [ ! -s "$tarball" ] || [ -n "${HYPERINFER_SMOKE_REFRESH:-}" ]; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    say "debootstrap --variant=minbase bookworm (cached in $tarball)"
    debootstrap --variant=minbase bookworm "$DOCKERD_WORK/rootfs" >"$DOCKERD_WORK/debootstrap.log" 2>&1 \
      || { tail -n 20 "$DOCKERD_WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    tar -C "$DOCKERD_WORK/rootfs" -c . >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
    rm -rf "$DOCKERD_WORK/rootfs"
  fi
  docker import "$tarball" hyperinfer/debian:bookworm >/dev/null
}

build_python_base() {
  cp -r "$ROOT/infra/docker/debian-python" "$DOCKERD_WORK/python-ctx"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$DOCKERD_WORK/python-ctx/ca/bundle.crt"
  fi
  docker build -q --build-arg DEBIAN_IMAGE=hyperinfer/debian:bookworm \
    -t hyperinfer/python:3.11-bookworm "$DOCKERD_WORK/python-ctx" >/dev/null \
    || die "building hyperinfer/python:3.11-bookworm failed"
}
