# syntax=docker/dockerfile:1
# One image per process, from shared stages: `--target gateway` (the default, last stage) or
# `--target myservice`. compose.yaml builds both. The images run the JavaScript `npm run build`
# emits (dist/), as `npm run up` does: no TypeScript loader at run time (faster start — it
# matters for an instance's restart after each Shutdown — and ~40 MB less memory per process).

FROM node:20-bookworm-slim AS toolchain
WORKDIR /app
# better-sqlite3 compiles from source on Node 20 (no prebuilt binary is guaranteed).
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./

FROM toolchain AS deps
RUN npm ci --omit=dev --no-audit --no-fund

FROM toolchain AS build
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY common ./common
COPY gen ./gen
COPY gateway ./gateway
COPY myservice ./myservice
COPY scripts ./scripts
RUN npm run build

FROM node:20-bookworm-slim AS runtime
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY --from=build /app/dist ./dist
# The development users file (compose's USERS_FILE); mount your own for production.
COPY gateway/dev-users.json ./gateway/dev-users.json
# The lease database volume is mounted here; a fresh named volume takes this owner.
RUN mkdir -p /data && chown node:node /data
USER node
# NODE_ENV is left unset on purpose: with NODE_ENV=production the gateway refuses the
# development secret and users, which the compose stack uses by default.
ENV LOG_FORMAT=json

FROM runtime AS myservice
ENV SERVICE_PORT_GRPC=5000
EXPOSE 5000
CMD ["node", "dist/myservice/main.js"]

FROM runtime AS gateway
ENV SERVICE_PORT_GRPC=10000
EXPOSE 10000
CMD ["node", "dist/gateway/main.js"]
