#!/usr/bin/env bash
# Packs the built GPU-facing binaries with every shared library they need beyond
# glibc (libstdc++ included) into .gpu/strata-gpu.tar.xz (an ignored
# folder), for machines that have a GPU but not Debian's gRPC/ICU packages.
# There: tar xf .gpu/strata-gpu.tar.xz -C /tmp && export LD_LIBRARY_PATH=/tmp/strata-gpu/lib
# and run /tmp/strata-gpu/bin/{strata,gpu_bench,runtime_backend_ops_test}.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${STRATA_BUILD_DIR:-$root/build}"
stage="$(mktemp -d)/strata-gpu"
mkdir -p "$stage/bin" "$stage/lib" "$root/.gpu"
bins=("$build/tools/strata" "$build/bench/gpu_bench" "$build/tests/runtime_backend_ops_test"
      "$build/tests/runtime_peer_link_test" "$build/tests/runtime_attention_v2_test")
for b in "${bins[@]}"; do
  cp "$b" "$stage/bin/"
  ldd "$b" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;;
      *) cp -n -L "$lib" "$stage/lib/" ;;
    esac
  done
done
tar -C "$(dirname "$stage")" -cJf "$root/.gpu/strata-gpu.tar.xz" strata-gpu
grep -qxF '/.gpu/' "$root/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >> "$root/.git/info/exclude"
du -h "$root/.gpu/strata-gpu.tar.xz"
