# The Express demo app on the floodwall package built (napi-rs) from this repository.
FROM node:20-bookworm AS build
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH=/root/.cargo/bin:$PATH
WORKDIR /src
COPY . .
RUN cd bindings-node && npm ci && npm run build && npm pack --pack-destination /pkg

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /pkg /pkg
RUN npm init -y >/dev/null && npm install --omit=dev /pkg/*.tgz express prom-client \
      @opentelemetry/api @opentelemetry/sdk-trace-node @opentelemetry/exporter-trace-otlp-http
COPY examples/express_app.js /app/express_app.js
EXPOSE 3000
CMD ["node", "express_app.js"]
