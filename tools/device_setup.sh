# Sourced by tools/device_train.sh and tools/device_bench.sh on the lent GPU machine, which
# has no network and no pydantic: installs pydantic from the wheels carried in .whl/ (made
# here by `make device-inputs`) and opticmem itself, editable.
if ! ls .whl/pydantic-*.whl >/dev/null 2>&1; then
  echo "no .whl/pydantic-*.whl in this tree: run 'make device-inputs' on the development" \
       "machine and carry .whl" >&2
  exit 2
fi
export PYTHONUNBUFFERED=1 OPTICMEM_PROGRESS=0
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
  .whl/*.whl $(ls .whl/ref/*.whl 2>/dev/null)
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
