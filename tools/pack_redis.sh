#!/usr/bin/env bash
# Pack this machine's redis-server with the shared libraries it needs into .redis/ and, for
# the lent GPU machine (no redis-server, no network, 64 MiB of carried files of which the
# tracked tree takes ~53), into .redis.tar.xz (~4.5 MB): carry ".redis.tar.xz" with
# tools/device_bench.sh queue, which unpacks it. .redis/redis-server is a wrapper that
# finds the libraries beside it; the C library and the loader stay the host's.
# redis-py's wheel goes in too (.redis/wheels/), not in .whl/, which training carries with
# data/synth at the edge of that limit.
# Usage: [PYTHON=.venv/bin/python] tools/pack_redis.sh   (repository root; needs
#   redis-server here: make redis-server)
set -euo pipefail
src=$(command -v redis-server) || { echo "no redis-server here: make redis-server" >&2; exit 1; }
rm -rf .redis && mkdir -p .redis/bin .redis/lib
cp -L "$src" .redis/bin/redis-server
ldd "$src" | awk '/=> \// {print $3}' | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so.*|libm.so.*|ld-linux*|libpthread.so.*|libdl.so.*|librt.so.*) ;;  # the host's own
    *) cp -L "$lib" .redis/lib/ ;;
  esac
done
cat > .redis/redis-server <<'WRAP'
#!/usr/bin/env bash
here=$(cd "$(dirname "$0")" && pwd)
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/bin/redis-server" "$@"
WRAP
chmod +x .redis/redis-server
.redis/redis-server --version
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d .redis/wheels "redis>=5.0"
tar -cJf .redis.tar.xz .redis
du -sh .redis .redis.tar.xz
