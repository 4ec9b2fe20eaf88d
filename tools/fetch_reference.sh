#!/usr/bin/env bash
# Put the public DeepSeek-OCR reference code into .ref/deepseek-ocr/ (gitignored scratch;
# never committed, never copied into the package) and the one extra pure-Python wheel its
# vision encoder imports (easydict) into .whl/ref/, for benchmarks/reference_speed.py.
#
# Usage: tools/fetch_reference.sh [GIT_DIR_OR_URL]
#   GIT_DIR_OR_URL: a (bare) clone of github.com/deepseek-ai/DeepSeek-OCR; default: the
#   local mirror at /work/.mirror/deepseek-ai+DeepSeek-OCR/repo when it exists, else the
#   GitHub URL (cloned bare into a temporary folder).
# The revision is pinned (REVISION below); the files are read with `git show`, so the
# clone needs no work tree. Running it again replaces .ref/deepseek-ocr/.
set -euo pipefail
REVISION=e4ac34e1e59b891163fb9325480fbedec865e1f0  # newest commit, "Update README.md"
MIRROR=/work/.mirror/deepseek-ai+DeepSeek-OCR/repo
URL=https://github.com/deepseek-ai/DeepSeek-OCR
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=$ROOT/.ref/deepseek-ocr
SOURCE=${1:-}
if [ -z "$SOURCE" ]; then
  if [ -d "$MIRROR" ]; then SOURCE=$MIRROR; else SOURCE=$URL; fi
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -d "$SOURCE" ]; then
  GIT_DIR=$SOURCE
else
  git clone -q --bare "$SOURCE" "$TMP/repo.git"
  GIT_DIR=$TMP/repo.git
fi
git --git-dir="$GIT_DIR" cat-file -e "$REVISION^{commit}" || {
  echo "revision $REVISION not in $SOURCE" >&2; exit 1; }

# The model code (DeepSeek-OCR-master/), its licence and requirements, at their own paths.
rm -rf "$DEST" && mkdir -p "$DEST"
git --git-dir="$GIT_DIR" ls-tree -r --name-only "$REVISION" -- \
    DeepSeek-OCR-master LICENSE requirements.txt \
  | while IFS= read -r path; do
      mkdir -p "$DEST/$(dirname "$path")"
      git --git-dir="$GIT_DIR" show "$REVISION:$path" > "$DEST/$path"
    done
echo "$REVISION" > "$DEST/REVISION"
test -f "$DEST/DeepSeek-OCR-master/DeepSeek-OCR-vllm/deepencoder/sam_vary_sdpa.py"

# easydict: imported by deepencoder/clip_sdpa.py; pure Python, one wheel for any CPython 3.
mkdir -p "$ROOT/.whl/ref"
if ! ls "$ROOT"/.whl/ref/easydict-*.whl >/dev/null 2>&1; then
  "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp -d "$ROOT/.whl/ref" "easydict==1.14"
fi
echo "reference code at $DEST ($(cat "$DEST/REVISION")); wheels: $(ls "$ROOT/.whl/ref")"
