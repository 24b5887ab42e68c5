/* tls.c - the TLS listener's connections: OpenSSL 3 through memory BIOs on
 * the worker's own loop.
 *
 * Nothing here blocks or owns a socket. Ciphertext read by server.c is
 * written into the SSL's read BIO in record-sized pieces and the plaintext
 * that comes out is handed to tg_conn_on_plain, as if it had been read from
 * a plain socket (it lands in the loop's shared read buffer, which the
 * ciphertext no longer needs). Whatever OpenSSL writes to the write BIO
 * (handshake, records, alerts) goes to the socket with tg_conn_write_raw
 * right after each call, so both BIOs stay small: a connection holds tens of
 * kilobytes at most, whatever it sends or receives.
 *
 * The protocol comes from ALPN once the handshake completes: "h2" starts an
 * HTTP/2 session, "http/1.1" is HTTP/1.1, and no ALPN falls back to sniffing
 * for the HTTP/2 preface as on a plain connection. */
#include "http/internal.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>

#define TLS_CHUNK 16384       /* one TLS record of plaintext */
#define TLS_FLUSH (64 * 1024) /* write BIO bytes sent at once */

static const unsigned char alpn_protos[] = "\x02h2\x08http/1.1";

static void tls_log_errors(const char *what)
{
    unsigned long e;
    char msg[256];
    while ((e = ERR_get_error())) {
        ERR_error_string_n(e, msg, sizeof(msg));
        tg_error("tls: %s: %s", what, msg);
    }
}

/* The server's preference wins: h2 when the client offers it. */
static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    unsigned char *o;
    if (SSL_select_next_proto(&o, outlen, alpn_protos, sizeof(alpn_protos) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

int tg_tls_ctx_new(SSL_CTX **out, const char *cert_file, const char *key_file)
{
    *out = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_log_errors("context");
        return TG_ECONFIG;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Renegotiation is a CPU lever for clients and HTTP/2 forbids it. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tg_error("tls: cannot use the certificate file %s", cert_file);
        tls_log_errors(cert_file);
        SSL_CTX_free(ctx);
        return TG_ECONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        tg_error("tls: cannot use the key file %s (with %s)", key_file, cert_file);
        tls_log_errors(key_file);
        SSL_CTX_free(ctx);
        return TG_ECONFIG;
    }
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);
    *out = ctx;
    return TG_OK;
}

void tg_tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

int tg_tls_conn_start(conn_t *c, SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (!ssl || !rb || !wb) {
        SSL_free(ssl);
        BIO_free(rb);
        BIO_free(wb);
        ERR_clear_error();
        return TG_ENOMEM;
    }
    /* An empty read BIO means "wait for more", never end of stream. */
    BIO_set_mem_eof_return(rb, -1);
    BIO_set_mem_eof_return(wb, -1);
    SSL_set_bio(ssl, rb, wb);
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    return TG_OK;
}

void tg_tls_free(conn_t *c)
{
    SSL_free(c->ssl); /* and its BIOs */
    c->ssl = NULL;
}

/* Sends what OpenSSL wrote. Returns 0 or TG_ECLOSED. */
static int tls_flush(conn_t *c)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    char *p;
    long n = BIO_get_mem_data(wb, &p);
    if (n <= 0) return c->closing ? TG_ECLOSED : TG_OK;
    uv_buf_t b = uv_buf_init(p, (unsigned)n);
    int rc = tg_conn_write_raw(c, &b, 1); /* copies what the socket does not take */
    (void)BIO_reset(wb);
    return rc;
}

/* Handshake done: the protocol ALPN chose. */
static int tls_pick_protocol(conn_t *c)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    if (n == 2 && memcmp(p, "h2", 2) == 0) return tg_h2_start(c);
    if (n) c->proto = TG_PROTO_H1;
    return TG_OK; /* no ALPN: sniff, as on a plain connection */
}

void tg_tls_on_read(conn_t *c, const char *data, size_t n)
{
    SSL *ssl = c->ssl;
    BIO *rb = SSL_get_rbio(ssl);
    char *out = c->w->rbuf; /* where data is too */
    size_t off = 0;
    int gone = 0;
    /* A record's worth at a time, drained before the next, keeps the BIO
     * small. Plaintext never outgrows the ciphertext it came from, so
     * reading at most off bytes into out only overwrites input the BIO
     * already holds. */
    while (off < n && !c->closing && !gone) {
        size_t k = n - off < TLS_CHUNK ? n - off : TLS_CHUNK;
        if (BIO_write(rb, data + off, (int)k) != (int)k) {
            ERR_clear_error();
            tg_conn_close(c);
            return;
        }
        off += k;
        if (!SSL_is_init_finished(ssl)) {
            int r = SSL_do_handshake(ssl);
            if (tls_flush(c)) return;
            if (r <= 0) {
                if (SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ) continue;
                tg_debug("tls: handshake failed");
                ERR_clear_error();
                tg_conn_close(c);
                return;
            }
            if (tls_pick_protocol(c)) {
                tg_conn_close(c);
                return;
            }
        }
        while (!c->closing) {
            int r = SSL_read(ssl, out, (int)(off < TG_HTTP_READ_BUF ? off : TG_HTTP_READ_BUF));
            if (r > 0) {
                tg_conn_on_plain(c, out, (size_t)r);
                continue;
            }
            int e = SSL_get_error(ssl, r);
            if (e == SSL_ERROR_WANT_READ) break;
            if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: the client's FIN */
                gone = 1;
                break;
            }
            ERR_clear_error();
            tg_conn_close(c);
            return;
        }
    }
    if (c->closing || tls_flush(c)) return; /* tickets, alerts, key updates */
    if (gone) tg_conn_on_eof(c);
}

static int tls_write1(conn_t *c, const char *p, size_t n)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    while (n) {
        int k = n < TLS_CHUNK ? (int)n : TLS_CHUNK;
        int r = SSL_write(c->ssl, p, k);
        if (r <= 0) {
            ERR_clear_error();
            tg_conn_close(c);
            return TG_ECLOSED;
        }
        p += r;
        n -= (size_t)r;
        if (BIO_pending(wb) >= TLS_FLUSH && tls_flush(c)) return TG_ECLOSED;
    }
    return TG_OK;
}

int tg_tls_write(conn_t *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (c->closing || !SSL_is_init_finished(c->ssl)) return TG_ECLOSED;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total == 0) return TG_OK;
    int rc = TG_OK;
    if (nbufs > 1 && total <= TLS_CHUNK) {
        /* A chunk's size line, data and CRLF in one record, not three. */
        char one[TLS_CHUNK];
        size_t off = 0;
        for (unsigned i = 0; i < nbufs; i++) {
            memcpy(one + off, bufs[i].base, bufs[i].len);
            off += bufs[i].len;
        }
        rc = tls_write1(c, one, total);
    } else {
        for (unsigned i = 0; i < nbufs && !rc; i++)
            rc = tls_write1(c, bufs[i].base, bufs[i].len);
    }
    if (rc) return rc;
    return tls_flush(c);
}

void tg_tls_close_notify(conn_t *c)
{
    if (!SSL_is_init_finished(c->ssl)) return;
    if (SSL_shutdown(c->ssl) < 0) ERR_clear_error();
    tls_flush(c);
}
