#!/usr/bin/env bash
# Start destseg-runtime in its Jetson container with the GPU, the cameras, the display and the network.
#
#   docker/jetson/run.sh BUNDLE [destseg-runtime options]
#   docker/jetson/run.sh ~/bundles/widget --camera /dev/video0 --output display
#   docker/jetson/run.sh ~/bundles/widget --camera csi://0 --output rtp://192.168.1.20:5000 --headless
#
# BUNDLE (a destseg-export folder) is mounted read-only at /bundle, where the image's
# DESTSEG_BUNDLE points. The current folder is mounted at /data and is the working directory,
# so --output clip.mp4 or --events log.jsonl land beside you. TensorRT engines are built on
# the first start and kept in the docker volume destseg-engines, so later starts are quick.
# Host networking lets --output rtp://HOST:PORT and rtsp:// inputs work without port mapping.
#
# Environment: DESTSEG_IMAGE (default destseg-runtime:latest); DESTSEG_ENTRYPOINT to run
# another command of the image, e.g. DESTSEG_ENTRYPOINT=destseg-bench run.sh BUNDLE /bundle.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$1/destseg.json" ]; then
    echo "error: ${1:-BUNDLE} is not a bundle folder (no destseg.json); usage: $0 BUNDLE [destseg-runtime options]" >&2
    exit 2
fi
bundle=$(cd "$1" && pwd)
shift

args=(run --rm --init --runtime nvidia --network host
    -e NVIDIA_DRIVER_CAPABILITIES=compute,utility,video,graphics
    -v "$bundle:/bundle:ro"
    -v "$PWD:/data" -w /data
    -v destseg-engines:/home/destseg/.cache/destseg)
if [ -t 0 ] && [ -t 1 ]; then
    args+=(-it)
fi
# USB cameras: every /dev/video* present (the runtime's --camera picks one).
for dev in /dev/video*; do
    if [ -e "$dev" ]; then
        args+=(--device "$dev")
    fi
done
# CSI cameras: nvarguscamerasrc talks to the host's nvargus-daemon through this socket.
if [ -S /tmp/argus_socket ]; then
    args+=(-v /tmp/argus_socket:/tmp/argus_socket)
fi
# The L4T release, for destseg-bench's machine record.
if [ -f /etc/nv_tegra_release ]; then
    args+=(-v /etc/nv_tegra_release:/etc/nv_tegra_release:ro)
fi
# The display: the X11 socket, and permission for the container user (same uid as you, see build.sh).
if [ -n "${DISPLAY:-}" ]; then
    args+=(-e DISPLAY -v /tmp/.X11-unix:/tmp/.X11-unix)
    if command -v xhost >/dev/null; then
        xhost "+SI:localuser:$(id -un)" >/dev/null 2>&1 \
            || echo "warning: xhost failed; --output display may be refused by the X server" >&2
    fi
fi
if [ -n "${DESTSEG_ENTRYPOINT:-}" ]; then
    args+=(--entrypoint "$DESTSEG_ENTRYPOINT")
fi

exec docker "${args[@]}" "${DESTSEG_IMAGE:-destseg-runtime:latest}" "$@"
