#!/usr/bin/env bash
# Put the public DeepSeek-OCR reference code into .ref/deepseek-ocr/ (gitignored scratch;
# never committed, never copied into the package) and the one extra pure-Python wheel its
# vision encoder imports (easydict) into .whl/ref/, for benchmarks/reference_speed.py; and
# the Hub model repo's remote code (the reference decoder) with its pinned packages, for
# benchmarks/reference_decode_speed.py (see the second half).
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

# The reference *decoder* runs from the Hub model repo's remote code (deepseek-ai/DeepSeek-OCR,
# pinned to transformers 4.46.3), for benchmarks/reference_decode_speed.py. The Hub is not
# reachable from these machines; the files come from a public GitHub copy, pinned to a
# commit whose six files are byte-identical to the copies of 6–10 unrelated repositories
# (SHA-256 checked below), into .ref/deepseek-ocr-hub/deepseek_ocr_hub/ (a package, so the
# modules' relative imports work). Its pinned packages go to .ref-wheels/, outside .whl/
# (which device calls install, and carry whole beside the bundled weights; these 16 MiB
# would not fit): transformers 4.46.3, tokenizers 0.20.3 and a
# huggingface_hub below 1.0 (and einops, which the modules import), for CPython 3.12 (the
# GPU machine) and this machine's Python.
HUB_MIRROR=/work/.mirror/gustavoMarajo+ia_ds_ocr/repo
HUB_URL=https://github.com/gustavoMarajo/ia_ds_ocr
HUB_REVISION=4bcfce2cb1c06b53fbca85987d7792fa60311d65
HUB_DEST=$ROOT/.ref/deepseek-ocr-hub/deepseek_ocr_hub
if [ -d "$HUB_MIRROR" ]; then HUB_GIT=$HUB_MIRROR; else
  git clone -q --bare "$HUB_URL" "$TMP/hub.git"; HUB_GIT=$TMP/hub.git; fi
rm -rf "$HUB_DEST" && mkdir -p "$HUB_DEST"
while read -r sha file; do
  git --git-dir="$HUB_GIT" show "$HUB_REVISION:$file" > "$HUB_DEST/$file"
  echo "$sha  $HUB_DEST/$file" | sha256sum --check --quiet
done <<'SUMS'
5835e0b9e1942fe36df9123009d1d80a2b78ccbe6a2d535668a6561e3d4068b1 modeling_deepseekocr.py
69184a0493d1fdac21c360f9f9eabc5b5af3188e0265df44cfaeafc44f9095e3 modeling_deepseekv2.py
6ab21f29a4722e26fa28c8e0d4277591689a598df17cf6c712330e8f62b3fc7c configuration_deepseek_v2.py
0ae2fb6d1e5ae8cf100fc32f854830acd08c821a0a1f23a94a76588c222ddcf2 deepencoder.py
ec7b6ce89bcda643de1f43269ffa66a7b2e65dc3ed30e427958f776546b4ba03 conversation.py
ac358c28898de6a71e84e0cb959fcc97fcb9c674edae13cd24286c17b90032d8 config.json
SUMS
: > "$HUB_DEST/__init__.py"
echo "$HUB_URL@$HUB_REVISION" > "$HUB_DEST/../REVISION"
mkdir -p "$ROOT/.ref-wheels"
HERE=$("${PYTHON:-python3}" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
for version in 3.12 "$HERE"; do
  "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "$version" --implementation cp --platform manylinux2014_x86_64 \
    -d "$ROOT/.ref-wheels" tokenizers==0.20.3
done
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d "$ROOT/.ref-wheels" \
  transformers==4.46.3 huggingface_hub==0.26.5 einops==0.8.1
echo "reference decoder code at $HUB_DEST; wheels: $(ls "$ROOT/.ref-wheels")"
