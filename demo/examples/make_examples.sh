#!/usr/bin/env bash
# Regenerates the bundled prompt clips (Debian: apt-get install espeak-ng sox).
# Kept beside the clips so anyone can check exactly how they were made.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make_clip() {  # name voice pitch words-per-minute text
    espeak-ng -v "$2" -p "$3" -s "$4" -w "$tmp/$1.wav" "$5"
    # espeak-ng writes 22.05 kHz; the model wants 16 kHz mono 16-bit. Peak at -3 dBFS; no dither (-D), so a rerun
    # gives byte-identical files.
    sox -D "$tmp/$1.wav" -r 16000 -c 1 -b 16 "$1.wav" norm -3
    printf '%s\n' "$5" > "$1.txt"
}
make_clip female_us gmw/en-US+f3 65 150 "The quick brown fox jumps over the lazy dog."
make_clip male_us gmw/en-US+m3 40 145 "Every morning the old train rolls slowly into the quiet station."
make_clip male_uk gmw/en-GB-x-rp+m7 50 150 "Bright kites were dancing high above the windy green hills."
