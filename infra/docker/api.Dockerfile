# The public API (apps/api). Build from the repository root:
#   docker build -f infra/docker/api.Dockerfile -t loraplex-api .
FROM node:20-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake g++ make python3 && rm -rf /var/lib/apt/lists/*
RUN npm install -g pnpm@12
WORKDIR /src
COPY . .
# The API imports the engine for adapter validation only: a CPU build of the addon is enough.
ENV LORAPLEX_CUDA=OFF TURBO_TELEMETRY_DISABLED=1
RUN pnpm install --frozen-lockfile && pnpm build && pnpm deploy --filter @loraplex/api --prod /out

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /out /app
ENV PORT=8080 HOST=0.0.0.0
EXPOSE 8080
USER node
CMD ["node", "dist/cli.js", "serve"]
