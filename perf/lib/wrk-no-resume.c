/*
 * LD_PRELOAD shim for wrk (perf/run.sh, MODE=tls, scenario `close`): every
 * new connection makes a full TLS handshake, whatever the server offers.
 *
 * wrk keeps one SSL object per connection slot and, on reconnect, calls
 * SSL_shutdown() then SSL_clear(), which keeps the last session: the next
 * SSL_connect() then offers it (a TLS 1.3 PSK from the server's
 * NewSessionTicket) and the server may resume instead of signing and
 * verifying certificates.  Servers differ in whether they allow that
 * (tickets, session caches), so without this shim "new connection per
 * request" would measure full handshakes for some proxies and resumptions
 * for others.  Here SSL_clear() also drops the session.
 *
 * Built by run.sh into the scratch dir:  cc -shared -fPIC -O2 -o X.so X.c -ldl
 * No OpenSSL headers needed: the two functions are looked up at run time in
 * the libssl wrk already loaded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_set_session(SSL *s, SSL_SESSION *session);

int SSL_clear(SSL *s) {
    static int (*real_clear)(SSL *);
    if (!real_clear) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        if (!real_clear) {
            return 0;
        }
    }
    int r = real_clear(s);
    SSL_set_session(s, NULL);
    return r;
}
