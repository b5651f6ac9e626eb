#!/bin/bash
# Builds llama.cpp's CPU engine from a source tree in upstream layout (ggml/,
# src/, include/) into OUT/libllama_cpu.a, then bench/llama_cpp/driver.cc
# against it as OUT/llama_cpp_driver. A plain native build (-O3
# -march=native, llamafile sgemm and CPU repacking on, as llama.cpp's own
# CMake defaults) compiled by a generated Makefile, so it does not depend on
# the tree's CMake files (some vendored copies ship without them).
#
#   bench/llama_cpp/build.sh SRC OUT
set -euo pipefail
SRC=$(cd "$1" && pwd)
mkdir -p "$2/obj"
OUT=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
for d in ggml/src/ggml-cpu src include; do
  [ -d "$SRC/$d" ] || { echo "build.sh: $SRC has no $d/ (not a llama.cpp source tree)" >&2; exit 1; }
done
{
  echo "DEFS := -DNDEBUG -D_GNU_SOURCE -DGGML_SCHED_MAX_COPIES=4 -DGGML_USE_CPU -DGGML_USE_LLAMAFILE -DGGML_USE_CPU_REPACK '-DGGML_VERSION=\"bench\"' '-DGGML_COMMIT=\"bench\"'"
  echo "INC := -I$SRC/ggml/include -I$SRC/ggml/src -I$SRC/ggml/src/ggml-cpu -I$SRC/include -I$SRC/src"
  echo "FLAGS := -O3 -march=native -fPIC -pthread -w"
  objs=""
  for f in "$SRC"/ggml/src/*.c "$SRC"/ggml/src/*.cpp "$SRC"/ggml/src/ggml-cpu/*.c \
      "$SRC"/ggml/src/ggml-cpu/*.cpp "$SRC"/ggml/src/ggml-cpu/arch/x86/*.c \
      "$SRC"/ggml/src/ggml-cpu/arch/x86/*.cpp "$SRC"/ggml/src/ggml-cpu/amx/*.cpp \
      "$SRC"/ggml/src/ggml-cpu/llamafile/*.cpp "$SRC"/src/*.cpp "$SRC"/src/models/*.cpp; do
    [ -f "$f" ] || continue
    case $f in *cpu-feats.cpp | */mem_* | *ollama-debug*) continue ;; esac
    o=$OUT/obj/$(echo "${f#"$SRC"/}" | tr / _).o
    objs="$objs $o"
    case $f in
      *.c) printf '%s: %s\n\tcc -std=gnu11 $(FLAGS) $(DEFS) $(INC) -c $< -o $@\n' "$o" "$f" ;;
      *) printf '%s: %s\n\tc++ -std=gnu++17 $(FLAGS) $(DEFS) $(INC) -c $< -o $@\n' "$o" "$f" ;;
    esac
  done
  printf '%s/libllama_cpu.a:%s\n\trm -f $@ && ar rcs $@ $^\n' "$OUT" "$objs"
  printf '%s/llama_cpp_driver: %s/driver.cc %s/libllama_cpu.a\n\tc++ -std=gnu++17 -O2 -march=native $(INC) $< %s/libllama_cpu.a -pthread -o $@\n' \
    "$OUT" "$HERE" "$OUT" "$OUT"
} > "$OUT/Makefile"
make -s -f "$OUT/Makefile" -j"$(nproc)" "$OUT/llama_cpp_driver"
