#!/usr/bin/env bash
# Builds the object-store servers the storage-scheme tests run against, from their own sources,
# and caches them outside the repository keyed by version. Only what is missing is built.
#
#   hack/build-stores.sh [seaweedfs|fake-gcs|azurite]...   # build what is missing, print each path
#   hack/build-stores.sh --print-dir NAME                   # only print where NAME goes (devtools.stores)
#
# SeaweedFS serves s3:// and oci:// (Oracle's S3-compatible API), fake-gcs-server serves gs://,
# Azurite serves az://. Each lands in $CACHE/stores/<name>-<version>/.
set -euo pipefail

SEAWEEDFS_VERSION=${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
FAKE_GCS_VERSION=${FAKE_GCS_VERSION:-v1.56.1}
AZURITE_VERSION=${AZURITE_VERSION:-3.37.0}

CACHE=${OME_CACHE:-$HOME/.cache/ome-operator}
STORES=$CACHE/stores

dir_of() {
  case $1 in
    seaweedfs) echo "$STORES/seaweedfs-$SEAWEEDFS_VERSION" ;;
    fake-gcs) echo "$STORES/fake-gcs-server-$FAKE_GCS_VERSION" ;;
    azurite) echo "$STORES/azurite-$AZURITE_VERSION" ;;
    *) echo "unknown store $1 (seaweedfs, fake-gcs, azurite)" >&2; return 2 ;;
  esac
}

if [ "${1:-}" = "--print-dir" ]; then
  dir_of "${2:?--print-dir NAME}"
  exit 0
fi

# Same Go caches as the cluster binaries: one directory holds everything builds reuse.
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE_OVERRIDE:-$CACHE/go/build}
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false

log() { printf '[build-stores] %s\n' "$*" >&2; }
mkdir -p "$STORES" "$GOMODCACHE" "$GOCACHE"
# Taken only when something must be built: a present binary is usable while another one builds.
lock() {
  [ -n "${LOCKED:-}" ] && return
  exec 9>"$STORES/.build.lock"
  if ! flock -n 9; then
    log "another build holds $STORES/.build.lock; waiting for it"
    flock 9
  fi
  LOCKED=1
}

# A wrapper module, so the server's own go.mod pins its dependencies (go get -tool keeps them).
build_go_tool() {  # NAME MODULE@VERSION PACKAGE OUTPUT
  local name=$1 modver=$2 pkg=$3 out=$4 w start=$SECONDS
  lock
  [ -x "$out/$(basename "$pkg")" ] && return  # built by the holder of the lock meanwhile
  w=$CACHE/work/store-$name; rm -rf "$w"; mkdir -p "$w"
  printf 'module local.build/store-%s\n\ngo 1.26.0\n' "$name" > "$w/go.mod"
  (cd "$w" && go get -tool "$pkg@${modver#*@}") || { log "FAILED: go get $pkg@${modver#*@}"; exit 1; }
  mkdir -p "$out.tmp"
  (cd "$w" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/" "$pkg") || { log "FAILED: go build $pkg"; exit 1; }
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "$name: built in $((SECONDS - start)) s"
}

build_seaweedfs() {
  local d; d=$(dir_of seaweedfs)
  [ -x "$d/weed" ] || build_go_tool seaweedfs "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" \
    github.com/seaweedfs/seaweedfs/weed "$d"
  echo "$d/weed"
}

build_fake-gcs() {
  local d; d=$(dir_of fake-gcs)
  [ -x "$d/fake-gcs-server" ] || build_go_tool fake-gcs "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION" \
    github.com/fsouza/fake-gcs-server "$d"
  echo "$d/fake-gcs-server"
}

build_azurite() {
  local d start=$SECONDS; d=$(dir_of azurite)
  [ -x "$d/node_modules/.bin/azurite-blob" ] || lock
  if [ ! -x "$d/node_modules/.bin/azurite-blob" ]; then
    command -v npm >/dev/null || { log "npm is not on PATH (Node 20 or newer is needed for Azurite)"; exit 1; }
    rm -rf "$d.tmp"; mkdir -p "$d.tmp"
    npm install --prefix "$d.tmp" --no-audit --no-fund --omit=dev "azurite@$AZURITE_VERSION" >&2 \
      || { log "FAILED: npm install azurite@$AZURITE_VERSION"; exit 1; }
    rm -rf "$d"; mv "$d.tmp" "$d"
    log "azurite: installed in $((SECONDS - start)) s"
  fi
  echo "$d/node_modules/.bin/azurite-blob"
}

for part in "${@:-seaweedfs fake-gcs azurite}"; do
  for p in $part; do "build_$p"; done
done
