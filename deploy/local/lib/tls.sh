# shellcheck shell=bash
# Certificates of the secured shapes (SECURE=1): a local CA made here with
# openssl (nothing is downloaded), and one server certificate for
# IP:127.0.0.1 and DNS:localhost that Kafka and Redis both present. PEM files
# for Redis and clients, PKCS12 key and trust stores for Kafka. Made once and
# reused; the server certificate is remade when it nears its end or no longer
# chains to the CA.

TLS_CA="$TLS_DIR/ca.pem"         # what clients trust (LEADS_KAFKA_SSL_CA_LOCATION, ssl_ca_certs)
TLS_CA_KEY="$TLS_DIR/ca.key"     # signs the server certificate; never leaves this folder
TLS_CERT="$TLS_DIR/server.pem"   # Redis tls-cert-file
TLS_KEY="$TLS_DIR/server.key"    # Redis tls-key-file
TLS_KEYSTORE="$TLS_DIR/keystore.p12"
TLS_TRUSTSTORE="$TLS_DIR/truststore.p12"
TLS_STORE_PASSWORD="$SECRETS_DIR/tls-store.password"
# The server certificate's subject. Kafka's controller listener requires it as
# a client certificate (mTLS), so it is also the principal the nodes talk to
# each other's controllers as: User:CN=<this>, a super user.
TLS_SERVER_CN=leadattr-local-server
TLS_TOOLS_LOG="$LOG_DIR/tls.log"

tls_run() { # tls_run CMD...: quiet unless it fails
  "$@" >>"$TLS_TOOLS_LOG" 2>&1 || {
    tail_log "$TLS_TOOLS_LOG"
    die "$1 failed while making certificates in $TLS_DIR (log: $TLS_TOOLS_LOG)"
  }
}

tls_server_cert_ok() {
  [[ -s "$TLS_CERT" && -s "$TLS_KEY" ]] || return 1
  # Valid for 30 more days, and issued by the CA in this folder.
  openssl x509 -checkend $((30 * 86400)) -noout -in "$TLS_CERT" >/dev/null 2>&1 || return 1
  openssl verify -CAfile "$TLS_CA" "$TLS_CERT" >/dev/null 2>&1
}

tls_make_ca() {
  log "tls: making a local CA in $TLS_DIR (one-off)"
  tls_run openssl req -x509 -new -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout "$TLS_CA_KEY" -out "$TLS_CA" -subj "/CN=leadattr local CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

tls_make_server_cert() {
  log "tls: issuing the server certificate (SAN IP:127.0.0.1, DNS:localhost)"
  local ext="$TLS_DIR/server.ext" csr="$TLS_DIR/server.csr"
  tls_run openssl req -new -newkey rsa:2048 -nodes -keyout "$TLS_KEY" -out "$csr" -subj "/CN=$TLS_SERVER_CN"
  # clientAuth too: the same certificate is the client side of the controller mTLS.
  cat >"$ext" <<'EOF'
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EOF
  tls_run openssl x509 -req -sha256 -days 825 -in "$csr" -CA "$TLS_CA" -CAkey "$TLS_CA_KEY" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$ext" -out "$TLS_CERT"
  rm -f "$csr" "$ext" "$TLS_KEYSTORE" "$TLS_TRUSTSTORE"
}

tls_make_stores() {
  local keytool
  keytool="$(keytool_path)" || die "keytool not found (it ships with the JDK next to java)"
  rm -f "$TLS_KEYSTORE" "$TLS_TRUSTSTORE"
  tls_run openssl pkcs12 -export -name kafka -in "$TLS_CERT" -inkey "$TLS_KEY" -certfile "$TLS_CA" \
    -out "$TLS_KEYSTORE" -passout "file:$TLS_STORE_PASSWORD"
  tls_run "$keytool" -importcert -noprompt -alias local-ca -file "$TLS_CA" \
    -keystore "$TLS_TRUSTSTORE" -storetype PKCS12 -storepass:file "$TLS_STORE_PASSWORD"
}

tls_prepare() {
  mkdir -p "$TLS_DIR"
  local old_umask
  old_umask="$(umask)"
  umask 077
  if [[ ! -s "$TLS_CA" || ! -s "$TLS_CA_KEY" ]]; then
    tls_make_ca
    rm -f "$TLS_CERT"
  fi
  tls_server_cert_ok || tls_make_server_cert
  secret tls-store >/dev/null
  [[ -s "$TLS_KEYSTORE" && -s "$TLS_TRUSTSTORE" ]] || tls_make_stores
  umask "$old_umask"
  # Clients (maybe another local user) read the CA; the keys and stores stay 600.
  chmod 755 "$TLS_DIR"
  chmod 644 "$TLS_CA"
}
