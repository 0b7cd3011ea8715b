# The public API (apps/api). Build from the repository root:
#   docker build -f infra/docker/api.Dockerfile -t loraplex-api .
FROM node:20-bookworm AS build
RUN npm install -g pnpm@12
WORKDIR /src
COPY . .
# The API is plain TypeScript all the way down (@loraplex/protocol, formats, common): no C++
# toolchain and no native addon; only its own workspace packages are installed and built.
ENV TURBO_TELEMETRY_DISABLED=1
RUN pnpm install --frozen-lockfile --filter "@loraplex/api..." && pnpm turbo run build --filter=@loraplex/api... && pnpm deploy --filter @loraplex/api --prod /out

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
