# The kube-site-recovery image: the operator (`ksr operator`), the replicators (agent, process
# server, master target) and the CLI, all one `ksr` binary.
#
# The base images are build arguments. Users get the public Node images; offline machines pass
# local ones (hack/build-base-images.sh makes them from Debian's packages and the npm registry):
#   podman build --build-arg BUILD_IMAGE=localhost/ksr-node-build:... \
#                --build-arg RUNTIME_IMAGE=localhost/ksr-node-runtime:... -t kube-site-recovery .
# The build image needs npm, a C++ toolchain and Python (zstd-napi and native/ compile from source).
ARG BUILD_IMAGE=docker.io/library/node:20-bookworm
ARG RUNTIME_IMAGE=docker.io/library/node:20-bookworm-slim

FROM ${BUILD_IMAGE} AS build
# Behind a TLS-inspecting proxy, pass its CA bundle (mounted into the build, never copied into
# the image): --volume BUNDLE:/etc/ssl/host-ca.crt:ro --build-arg npm_config_cafile=/etc/ssl/host-ca.crt
ARG npm_config_cafile
WORKDIR /src
# Dependencies first, so a source change reuses this layer.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund && npm rebuild zstd-napi \
  && test -x node_modules/.bin/tsc
# The replicators' native parts: the addon (xattrs, mknod, exact mtimes) and the fanotify helper.
COPY native ./native
RUN npm run build:native --silent \
  && test -f native/build/Release/ksr_native.node && test -x native/build/Release/ksr-fanotify-helper
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
RUN node_modules/.bin/tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts --no-audit --no-fund \
  && node -e 'require("zstd-napi")'

FROM ${RUNTIME_IMAGE}
# Nothing in the image grants privileges: the operator runs as this unprivileged user, and the
# agent's capabilities are granted by the pod spec the operator writes (the chart's NOTES.txt lists them).
RUN groupadd --system --gid 65532 ksr \
  && useradd --system --uid 65532 --gid ksr --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin ksr
WORKDIR /opt/kube-site-recovery
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/bin ./bin
COPY --from=build /src/native/build/Release/ksr_native.node /src/native/build/Release/ksr-fanotify-helper ./native/build/Release/
COPY crds ./crds
RUN ln -s /opt/kube-site-recovery/bin/ksr.js /usr/local/bin/ksr \
  && ln -s /opt/kube-site-recovery/bin/kubectl-dr.js /usr/local/bin/kubectl-dr \
  && ksr version
ENV NODE_ENV=production
USER 65532:65532
ENTRYPOINT ["ksr"]
CMD ["operator"]
