#!/usr/bin/env bash
# WordNet 3.0 for nltk's METEOR without the nltk downloader: Debian's packages, copied (not linked) into
# $NLTK_DATA/corpora/wordnet, plus the lexnames file Debian leaves out (from `man 5 lexnames`).
set -euo pipefail
target="${NLTK_DATA:-$HOME/nltk_data}/corpora/wordnet"
if [ -f "$target/lexnames" ] && [ -f "$target/data.noun" ]; then exit 0; fi
if [ ! -f /usr/share/wordnet/data.noun ]; then
  if python3 -c "import nltk,sys; sys.exit(0 if nltk.download('wordnet', quiet=True) else 1)" 2>/dev/null; then exit 0; fi
  apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null; }
fi
mkdir -p "$target"
cp -r /usr/share/wordnet/. "$target/"
cp "$(dirname "$0")/wordnet_lexnames" "$target/lexnames"
