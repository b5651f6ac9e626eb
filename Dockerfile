# The image deploy/k8s runs: `strata` and its SentencePiece module on Debian 12.
#   docker build -t REGISTRY/strata:TAG .
# Build stage: the same Debian packages tools/setup installs, without the
# test-only ones.
FROM debian:12 AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends cmake g++ make pkg-config libabsl-dev libsentencepiece-dev libicu-dev \
      libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc prometheus-cpp-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=Release -DSTRATA_BUILD_TESTS=OFF \
      -DSTRATA_CUDA=OFF \
    && cmake --build /build -j "$(nproc)" --target strata strata_spm strata-spm-train

# Run stage: the shared libraries those binaries link (found with ldd and
# dpkg -S on Debian 12), nothing else.
FROM debian:12-slim
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends libabsl20220623 libc-ares2 libcivetweb1 libgrpc++1.51 libgrpc29 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprotobuf32 libre2-9 \
      libsentencepiece0 libssl3 libicu72 \
    && rm -rf /var/lib/apt/lists/*
# strata finds libstrata_spm.so and strata-spm-train beside itself.
COPY --from=build /build/tools/strata /build/runtime/libstrata_spm.so \
     /build/runtime/strata-spm-train /usr/local/bin/
USER 65532:65532
ENV HOME=/tmp
ENTRYPOINT []
CMD ["strata", "help"]
