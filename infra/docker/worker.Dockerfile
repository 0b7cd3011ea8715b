# A worker (apps/worker) with the CUDA backend (sm_80/86/89/90; --build-arg CUDA_ARCHS=90 narrows
# it; cudart is linked statically, so the runtime image needs only the driver). Build from the
# repository root:
#   docker build -f infra/docker/worker.Dockerfile -t loraplex-worker .
# Without a GPU the same image serves on the CPU backend (--backend auto).
FROM nvidia/cuda:13.0.0-devel-ubuntu24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl cmake g++ make python3 \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y nodejs && rm -rf /var/lib/apt/lists/*
RUN npm install -g pnpm@12
WORKDIR /src
COPY . .
# The CUDA architectures the backend is compiled for (LORAPLEX_CUDA_ARCHS, semicolon-separated).
# turbo.json lists the LORAPLEX_* switches, so they reach the engine build (turbo runs tasks in
# strict env mode) and are part of its cache key. The CUDA emulator (tests only) is not built.
ARG CUDA_ARCHS="80;86;89;90"
ENV LORAPLEX_CUDA=ON LORAPLEX_CUDA_ARCHS=${CUDA_ARCHS} LORAPLEX_CUDA_EMU=OFF TURBO_TELEMETRY_DISABLED=1
# The addon is configured first without -march=native (LORAPLEX_NATIVE_ARCH=OFF, kept in the CMake
# cache for `pnpm build`'s own compile): the image runs on other CPUs than the one that built it.
# `pnpm deploy` copies the engine's package "files", which name build/Release/loraplex_native.node;
# the last check fails the build if the deployed tree has no addon.
RUN pnpm install --frozen-lockfile \
 && pnpm --filter @loraplex/engine exec cmake-js compile --out build --config Release --CDLORAPLEX_NATIVE_ARCH=OFF \
 && pnpm build && pnpm deploy --filter @loraplex/worker --prod /out \
 && test -f /out/node_modules/@loraplex/engine/build/Release/loraplex_native.node

FROM nvidia/cuda:13.0.0-base-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y nodejs && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out /app
# A fixed V8 heap ceiling (scheduler, tokenizer, JSON-mode grammars). Model weights, the KV cache,
# loaded adapters and the host adapter tier are native or Buffer memory outside the V8 heap, so
# the pod's memory must hold those plus this. A higher ceiling only lets V8 grow the heap further
# before collecting (the soak run's worker RSS climbed 203 -> 358 MiB in 4 minutes at 4096 MiB and
# stayed flat at 1024 MiB, with the same live data). Override with -e NODE_OPTIONS=--max-old-space-size=<MiB>.
ARG HEAP_MB=1024
ENV NODE_OPTIONS=--max-old-space-size=${HEAP_MB}
EXPOSE 8000
ENTRYPOINT ["node", "dist/cli.js", "--host", "0.0.0.0", "--port", "8000"]
