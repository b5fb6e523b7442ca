#!/bin/sh
# Makes a throwaway certificate authority and the certificates that
# double-proxy-client.yaml and double-proxy-server.yaml read (docs/tls.md):
#
#   ca.pem       the test CA (both proxies trust it: trusted_ca)
#   ca.key       its key (only needed to sign more certificates)
#   server.pem   the server proxy's certificate, SAN DNS:server.ringway.test, IP:127.0.0.1
#   server.key   its key
#   client.pem   the client proxy's certificate, SAN URI:spiffe://ringway.test/client,
#                DNS:client.ringway.test
#   client.key   its key
#   intruder.pem a client certificate from the same CA with another SAN
#   intruder.key (URI:spiffe://ringway.test/intruder), for trying a refused one
#
# Usage: make-test-ca.sh [DIR]     (DIR defaults to ./certs)
#
# Keys are ECDSA P-256 in PKCS#8 PEM, readable by the owner only. For tests
# and demonstrations: the CA key sits next to the certificates it signed.

set -eu

dir=${1:-./certs}
days_ca=3650
days_leaf=825

if ! command -v openssl >/dev/null 2>&1; then
    echo "make-test-ca.sh: openssl is not installed" >&2
    exit 1
fi
if [ -e "$dir/ca.pem" ] || [ -e "$dir/ca.key" ]; then
    echo "make-test-ca.sh: $dir already holds a CA; remove $dir to start over" >&2
    exit 1
fi

mkdir -p "$dir"
# Private keys are written owner-only.
umask 077

work=$(mktemp -d "${TMPDIR:-/tmp}/ringway-ca.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

# One OpenSSL config for every step: `req` needs a distinguished_name
# section even when -subj gives the name; the other sections are the
# extensions of each kind of certificate.
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
[dn]

[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:server.ringway.test, IP:127.0.0.1

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = URI:spiffe://ringway.test/client, DNS:client.ringway.test

[intruder]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = URI:spiffe://ringway.test/intruder
EOF

# Runs a command quietly (OpenSSL chatters on stderr); shows its messages
# and stops if it fails.
quiet() {
    if ! "$@" 2>"$work/stderr"; then
        cat "$work/stderr" >&2
        exit 1
    fi
}

new_key() {
    quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# The CA: self-signed.
new_key "$dir/ca.key"
quiet openssl req -new -x509 -config "$work/openssl.cnf" -extensions ca_ext \
    -key "$dir/ca.key" -subj "/O=ringway test/CN=ringway test CA" \
    -days "$days_ca" -sha256 -out "$dir/ca.pem"

# A certificate signed by the CA: leaf NAME "SUBJECT" (NAME is also the
# extensions section).
leaf() {
    new_key "$dir/$1.key"
    quiet openssl req -new -config "$work/openssl.cnf" \
        -key "$dir/$1.key" -subj "$2" -out "$work/$1.csr"
    quiet openssl x509 -req -in "$work/$1.csr" \
        -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAserial "$work/ca.srl" -CAcreateserial \
        -extfile "$work/openssl.cnf" -extensions "$1" \
        -days "$days_leaf" -sha256 -out "$dir/$1.pem"
}

leaf server "/O=ringway test/CN=server.ringway.test"
leaf client "/O=ringway test/CN=client.ringway.test"
leaf intruder "/O=ringway test/CN=intruder.ringway.test"

# Certificates are public.
chmod 644 "$dir/ca.pem" "$dir/server.pem" "$dir/client.pem" "$dir/intruder.pem"

for name in server client intruder; do
    quiet openssl verify -CAfile "$dir/ca.pem" "$dir/$name.pem" >/dev/null
done

echo "Made in $dir:"
for name in ca server client intruder; do
    subject=$(openssl x509 -in "$dir/$name.pem" -noout -subject)
    san=$(openssl x509 -in "$dir/$name.pem" -noout -ext subjectAltName 2>/dev/null | sed -n '2s/^ *//p')
    expires=$(openssl x509 -in "$dir/$name.pem" -noout -enddate)
    printf '  %-13s %s\n' "$name.pem" "$subject"
    if [ -n "$san" ]; then
        printf '  %-13s SAN %s\n' "" "$san"
    fi
    printf '  %-13s %s\n' "" "$expires"
    printf '  %-13s its private key\n' "$name.key"
done
