#!/usr/bin/env bash
# Installs what tests/test_demo.py's browser test drives: Debian's Chromium and ChromeDriver (never a browser that
# a test tool downloads), plus ffmpeg, which gradio needs to stream the demo's audio player.
# Best effort: if apt-get is missing or fails, it says so and exits 0, and the browser test skips with its reason.
set -u

notice() { echo "install_browser.sh: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    notice "not root and no password-less sudo: chromium not installed; the browser test will be skipped"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    notice "no apt-get on this machine: chromium not installed; the browser test will be skipped"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt() { "${SUDO[@]}" apt-get -qq -o=Dpkg::Use-Pty=0 "$@" >/dev/null; }

if ! apt update; then
    notice "apt-get update failed: chromium not installed; the browser test will be skipped"
    exit 0
fi
if apt install -y --no-install-recommends chromium chromium-driver; then
    notice "installed $(chromium --version 2>/dev/null || echo chromium) and chromedriver"
else
    notice "apt-get install chromium chromium-driver failed; the browser test will be skipped"
fi
# Without ffmpeg the demo still works, but plays the result only once it is finished.
apt install -y --no-install-recommends ffmpeg || notice "ffmpeg not installed: the demo's live streaming is off"
exit 0
