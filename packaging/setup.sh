#!/usr/bin/env bash
# One entry for a fresh Linux (Debian/Ubuntu) machine; safe to run again.
#   packaging/setup.sh app  [ARGS...]  install what is missing, then start the app (ARGS go to it)
#   packaging/setup.sh test [PYTEST ARGS...]  install what is missing, build test data, run all tests
#   packaging/setup.sh deps            install only
# Environment: PYTHON (interpreter for the venv, default python3), TORCH_SPEC (default torch==2.13.0,
# the CPU build on our machines; see README for CUDA), SKIP_APT=1 to skip Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

APT_PACKAGES=(
  libportaudio2 libsndfile1                       # sounddevice, soundfile
  xvfb xauth openbox trayer xdotool xclip x11-utils xterm # a real X11 session for the desktop tests
  mousepad                                         # a GTK text editor: a paste target of the desktop tests
  libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0 libxcb-randr0 libxcb-render-util0
  libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3
  espeak-ng sox pocketsphinx-testdata              # test speech: synthetic in six languages, real English
  fortunes fortunes-min                            # training text of the micro diffusion model
  curl                                             # tests/test_server_api.py talks to the speech server with it
  pulseaudio pulseaudio-utils libasound2-plugins   # a real microphone that goes away (tests/test_audio_recorder.py)
  sway foot wtype wl-clipboard dbus-daemon         # a real Wayland session (headless sway) for the desktop tests
  libwayland-client0 libwayland-cursor0            # Qt's Wayland platform plugin (the app as a Wayland client)
)

install_apt() {
  [ "${SKIP_APT:-0}" = 1 ] && return 0
  command -v dpkg-query >/dev/null || { echo "Not a Debian-based system: install the equivalents of: ${APT_PACKAGES[*]}" >&2; return 0; }
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "Installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python() {
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  local pip=("$VENV/bin/python" -m pip -q --disable-pip-version-check)
  # torch first, pinned, so that nothing later pulls a multi-GB CUDA build on CPU-only machines.
  "$VENV/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" install "$TORCH_SPEC"
  local stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
  if [ ! -f "$stamp" ]; then
    "${pip[@]}" install -e ".[test]"
    touch "$stamp"
  fi
}

cmd=${1:-app}
shift || true
case "$cmd" in
  deps) install_apt; install_python ;;
  app)
    install_apt; install_python
    exec "$VENV/bin/python" -m app "$@" ;;
  test)
    install_apt; install_python
    "$VENV/bin/python" -m tests.data.build
    exec "$VENV/bin/python" -m pytest "$@" ;;
  *) echo "usage: $0 app|test|deps [ARGS...]" >&2; exit 2 ;;
esac
