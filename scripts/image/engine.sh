#!/usr/bin/env bash
# The container engine for `make image` and the image tests.
#
#   scripts/image/engine.sh detect         prints docker when a Docker daemon answers, else podman
#   scripts/image/engine.sh ensure ENGINE  installs podman and what it needs here (Debian, as root) if missing
set -Eeuo pipefail

case "${1:-}" in
detect)
	if command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; then
		echo docker
	else
		echo podman
	fi
	;;
ensure)
	engine="${2:?usage: $0 ensure ENGINE}"
	if command -v "$engine" >/dev/null; then
		exit 0
	fi
	if [ "$engine" != podman ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
		echo >&2 "$engine is not installed: install docker or podman (Debian: apt-get install podman buildah runc)"
		exit 1
	fi
	echo "installing podman with apt-get"
	# runc, not crun: crun refuses hosts whose cgroup layout is hybrid (scripts/image/containers.conf).
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc >/dev/null
	;;
*)
	echo >&2 "usage: $0 detect | ensure ENGINE"
	exit 2
	;;
esac
