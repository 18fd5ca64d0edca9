#!/usr/bin/env bash
# Makes the Dockerfile's base image available to ENGINE under its own name.
#
#   scripts/image/base.sh ENGINE [IMAGE]      (IMAGE defaults to docker.io/library/debian:bookworm-slim)
#
# The registry's image is used whenever the engine already has it or can pull it. Only where no registry
# can be reached is it built here, from Debian's packages, the way the official image is built: the same
# tool (debuerreotype), the same steps as its examples/debian.sh for the "slim" variant, the same image
# config as its examples/oci-image.sh. The one difference is the mirror: the official build reads a
# snapshot.debian.org timestamp, this one the live deb.debian.org archive, so it carries every security
# update published so far, as a fresh `docker pull` would.
set -Eeuo pipefail

engine="${1:?usage: $0 ENGINE [IMAGE]}"
image="${2:-docker.io/library/debian:bookworm-slim}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

if "$engine" image inspect "$image" >/dev/null 2>&1; then
	exit 0
fi
if timeout 300 "$engine" pull --quiet "$image" >/dev/null 2>&1; then
	echo "base: pulled $image"
	exit 0
fi

tag="${image##*:}"
suite="${tag%-slim}"
if [ "$suite" = "$tag" ] || [[ "$suite" == *-* ]]; then
	echo >&2 "base: cannot pull $image, and only debian:<codename>-slim can be built here"
	exit 1
fi
if [ "$(id -u)" != 0 ]; then
	echo >&2 "base: cannot pull $image; building it from Debian packages needs root (debootstrap)"
	exit 1
fi
if ! command -v debuerreotype-init >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debuerreotype debootstrap wget
fi

echo "base: $image is not reachable; building it from $mirror with debuerreotype"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/base-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
export TZ=UTC LC_ALL=C

# debootstrap --variant=minbase with merged /usr, as debuerreotype-init does for bookworm and later.
debuerreotype-init --non-debian --merged-usr "$rootfs" "$suite" "$mirror"

# The official image's sources (debuerreotype-debian-sources-list --deb822), without the snapshot comments.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
chmod 0644 "$rootfs/etc/apt/sources.list.d/debian.sources"

debuerreotype-minimizing-config "$rootfs"
debuerreotype-apt-get "$rootfs" update -qq
debuerreotype-recalculate-epoch "$rootfs"
debuerreotype-apt-get "$rootfs" full-upgrade -yqq
debuerreotype-slimify "$rootfs"
# The published tarball has no machine-id: the image has never been booted (examples/debian.sh).
debuerreotype-tar --exclude ./etc/machine-id "$rootfs" "$work/rootfs.tar"

"$engine" import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["bash"]' \
	"$work/rootfs.tar" "$image" >/dev/null
echo "base: built $image ($(du -h "$work/rootfs.tar" | cut -f1) uncompressed)"
