#!/usr/bin/env bash
# Installs the servers AdClick runs on into the project's ignored .infra/ folder:
#   .infra/bin/nats-server           built from its Go module (go install)
#   .infra/bin/nats                  the NATS CLI, best effort (handy for trying queries by hand)
#   .infra/cassandra-<ver>/lib/*.jar Apache Cassandra's runtime, from Maven Central (via Maven)
# and the Debian packages they need when missing (Java 17, Maven). Idempotent and quiet when
# everything is already in place; safe to run on every start.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$root/scripts/versions.env"
infra="$root/.infra"
bin="$infra/bin"
mkdir -p "$bin"
log() { printf '[provision] %s\n' "$*"; }

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    log "missing $*; install it with: sudo apt-get install -y $*"; return 1
  fi
  log "apt-get install $*"
  if [ ! -f "$infra/.apt-updated" ]; then apt-get update -qq && touch "$infra/.apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Debian packages the servers need -----------------------------------------------------
command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
command -v mvn >/dev/null 2>&1 || apt_install maven
# ss/ps are used by the test harness' diagnostics; procps is tiny.
command -v ps >/dev/null 2>&1 || apt_install procps
# The TLS tests make a throwaway CA and server certificates with it.
command -v openssl >/dev/null 2>&1 || apt_install openssl
# The web console's tests drive it (puppeteer-core; nothing is downloaded at test time).
command -v chromium >/dev/null 2>&1 || apt_install chromium

# --- nats-server ----------------------------------------------------------------------------
want_ns=${NATS_SERVER_VERSION#v}
have_ns=$("$bin/nats-server" --version 2>/dev/null | sed -n 's/.*v\([0-9.]*\).*/\1/p' || true)
if [ "$have_ns" != "$want_ns" ]; then
  if command -v go >/dev/null 2>&1; then
    log "building nats-server $NATS_SERVER_VERSION (go install)"
    GOBIN="$bin" GOFLAGS=-buildvcs=false go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION"
  else
    # Fallback only: Debian's 2.9.10 lacks sync_interval, atomic batch publish and the
    # post-Jepsen fixes. The launcher warns when it runs an older server.
    log "Go is missing: falling back to Debian's nats-server package (2.9.x, not for production)"
    command -v nats-server >/dev/null 2>&1 || apt_install nats-server
    ln -sf "$(command -v nats-server)" "$bin/nats-server"
  fi
fi

# --- nats CLI (optional) ------------------------------------------------------------------
if [ ! -x "$bin/nats" ] && [ ! -f "$infra/.nats-cli-unavailable" ] && command -v go >/dev/null 2>&1; then
  log "building the nats CLI $NATS_CLI_VERSION (optional)"
  if ! GOBIN="$bin" GOFLAGS=-buildvcs=false go install "github.com/nats-io/natscli/nats@$NATS_CLI_VERSION" >"$infra/nats-cli-install.log" 2>&1; then
    log "the nats CLI could not be installed (see .infra/nats-cli-install.log); 'adclick query' covers the same requests"
    touch "$infra/.nats-cli-unavailable"
  fi
fi

# --- Apache Cassandra -----------------------------------------------------------------------
cass="$infra/cassandra-$CASSANDRA_VERSION"
if [ ! -f "$cass/.complete" ]; then
  log "fetching Apache Cassandra $CASSANDRA_VERSION from Maven Central (mvn)"
  rm -rf "$cass"
  mkdir -p "$cass/lib"
  mvn -B -q -Dstyle.color=never -f "$root/scripts/cassandra/pom.xml" \
    -Dcassandra.version="$CASSANDRA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$cass/lib"
  ls "$cass/lib/cassandra-all-$CASSANDRA_VERSION.jar" >/dev/null
  touch "$cass/.complete"
fi

log "ready: $("$bin/nats-server" --version), cassandra $CASSANDRA_VERSION ($(ls "$cass/lib" | wc -l) jars), $(java -version 2>&1 | head -1)"
