#!/usr/bin/env bash
# Build the destseg-runtime image on the Jetson, for the JetPack it runs.
#
#   docker/jetson/build.sh                    # base image chosen from /etc/nv_tegra_release
#   L4T_TAG=r35.4.1 docker/jetson/build.sh    # or named
#
# The build context is the repository root; BuildKit (Docker's default builder since 23.0)
# applies docker/jetson/Dockerfile.dockerignore to it. The image is tagged
# destseg-runtime:<L4T tag> and destseg-runtime:latest.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${L4T_TAG:-}" ]; then
    # "# R36 (release), REVISION: 4.0, ..." -> the l4t-jetpack release for that major version;
    # containers run on any minor version of their major L4T release.
    major=$(sed -n 's/^# R\([0-9]*\) (release).*/\1/p' /etc/nv_tegra_release 2>/dev/null || true)
    case "$major" in
        36) L4T_TAG=r36.4.0 ;;
        35) L4T_TAG=r35.4.1 ;;
        *) echo "error: cannot tell the JetPack release (/etc/nv_tegra_release says R${major:-?}); set L4T_TAG=r36.x.y (JetPack 6) or r35.x.y (JetPack 5)" >&2
           exit 2 ;;
    esac
fi
# The container user gets your uid, so files in mounted folders are yours and xhost can admit it.
uid=${SUDO_UID:-$(id -u)}
if [ "$uid" = 0 ]; then
    uid=1000
fi

DOCKER_BUILDKIT=1 docker build \
    -f "$root/docker/jetson/Dockerfile" \
    --build-arg "L4T_TAG=$L4T_TAG" \
    --build-arg "USER_UID=$uid" \
    -t "destseg-runtime:$L4T_TAG" -t destseg-runtime:latest \
    "$root"
