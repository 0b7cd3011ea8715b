# The public API (apps/api). Build from the repository root:
#   docker build -f infra/docker/api.Dockerfile -t loraplex-api .
FROM node:20-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake g++ make python3 && rm -rf /var/lib/apt/lists/*
RUN npm install -g pnpm@12
WORKDIR /src
COPY . .
# Adapter validation needs only @loraplex/formats (plain TypeScript). The C++ toolchain above and
# the CPU build of the engine's addon are still here because the API depends on @loraplex/worker
# (request schemas, platform signature), which depends on the engine; they go when that does.
ENV LORAPLEX_CUDA=OFF TURBO_TELEMETRY_DISABLED=1
RUN pnpm install --frozen-lockfile && pnpm turbo run build --filter=@loraplex/api... && pnpm deploy --filter @loraplex/api --prod /out

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /out /app
# A fixed V8 heap ceiling, so memory stays bounded under load whatever the host has: the heap is
# collected before it reaches it (a leak fails loudly instead of growing until the OOM killer).
# Keep it about 3/4 of the container's memory limit (uploads stream to disk, buffers live outside
# the heap); override at run time with -e NODE_OPTIONS=--max-old-space-size=<MiB>.
ARG HEAP_MB=1024
ENV PORT=8080 HOST=0.0.0.0 NODE_OPTIONS=--max-old-space-size=${HEAP_MB}
EXPOSE 8080
USER node
CMD ["node", "dist/cli.js", "serve"]
