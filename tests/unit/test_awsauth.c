/* test_awsauth.c - the AWS signing glue: bearer lines, static credentials
 * signed exactly as the signer itself signs, the session token line, the
 * signing-key cache, no credentials answered at once, and the Host header
 * value curl sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aws/sigv4.h"
#include "providers/awsauth.h"

static tg_provider_t provider(int auth)
{
    tg_provider_t p;
    memset(&p, 0, sizeof(p));
    p.name = "br";
    p.type = "bedrock";
    p.kind = TG_PROVIDER_BEDROCK;
    p.region = "us-east-1";
    p.auth = auth;
    p.bearer_token_env = "TG_TEST_BR_TOKEN";
    return p;
}

static void test_bearer(void **state)
{
    tg_provider_t p = provider(TG_AWS_AUTH_BEARER);
    p.bearer_token = "abc123";
    tg_awsauth_t *a;
    assert_int_equal(tg_awsauth_create(&a, &p), 0);
    assert_true(tg_awsauth_is_bearer(a));
    char err[128];
    assert_int_equal(tg_awsauth_wait(a, 0, err, sizeof(err)), 0);
    tg_awsauth_out_t o;
    tg_awsauth_req_t r = {.method = "POST",
                          .host = "h",
                          .region = "us-east-1",
                          .service = "bedrock",
                          .path = "/",
                          .path_len = 1};
    assert_int_equal(tg_awsauth_sign(a, NULL, &r, NULL, &o), 0);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.lines[0], "Authorization: Bearer abc123");
    tg_awsauth_destroy(a);

    /* The variable is unset: no credentials, said at once and by name. */
    p.bearer_token = NULL;
    assert_int_equal(tg_awsauth_create(&a, &p), 0);
    assert_int_equal(tg_awsauth_wait(a, 0, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "TG_TEST_BR_TOKEN"));
    assert_int_equal(tg_awsauth_sign(a, NULL, &r, NULL, &o), TG_EAUTH);
    tg_awsauth_destroy(a);

    /* A token that would add header lines of its own is refused, unquoted. */
    p.bearer_token = "abc\r\nX-Evil: 1";
    assert_int_equal(tg_awsauth_create(&a, &p), 0);
    assert_int_equal(tg_awsauth_wait(a, 0, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "TG_TEST_BR_TOKEN"));
    assert_null(strstr(err, "abc"));
    assert_int_equal(tg_awsauth_sign(a, NULL, &r, NULL, &o), TG_EAUTH);
    tg_awsauth_destroy(a);
}

static const char *line(const tg_awsauth_out_t *o, const char *prefix)
{
    for (size_t i = 0; i < o->n; i++)
        if (strncmp(o->lines[i], prefix, strlen(prefix)) == 0) return o->lines[i] + strlen(prefix);
    return NULL;
}

static void test_static_sigv4(void **state)
{
    tg_provider_t p = provider(TG_AWS_AUTH_SIGV4);
    p.creds.access_key_id_env = "X";
    p.creds.secret_access_key_env = "Y";
    p.creds.access_key_id = "AKIDEXAMPLE";
    p.creds.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    p.creds.session_token = "SESSIONTOKEN";
    tg_awsauth_t *a;
    char err[256];
    assert_int_equal(tg_awsauth_create(&a, &p), 0);
    assert_int_equal(tg_awsauth_start(a), 0);
    assert_int_equal(tg_awsauth_wait(a, 2000, err, sizeof(err)), 0);

    const char body[] = "{\"messages\":[]}";
    tg_header_t h[] = {{"content-type", 12, "application/json", 16},
                       {"accept", 6, "application/json", 16}};
    tg_awsauth_req_t r = {.method = "POST",
                          .host = "bedrock-runtime.us-east-1.amazonaws.com",
                          .region = "us-east-1",
                          .service = "bedrock",
                          .path = "/model/a.b%3A0/converse",
                          .path_len = 23,
                          .headers = h,
                          .nheaders = 2,
                          .body = body,
                          .body_len = strlen(body)};
    tg_arena_t arena;
    tg_arena_init(&arena, 1 << 16);
    tg_awsauth_keys_t keys;
    memset(&keys, 0, sizeof(keys));
    tg_awsauth_out_t o;
    assert_int_equal(tg_awsauth_sign(a, &keys, &r, &arena, &o), 0);
    assert_int_equal(o.n, 3);
    const char *date = line(&o, "x-amz-date: ");
    const char *tok = line(&o, "x-amz-security-token: ");
    const char *auth = line(&o, "Authorization: ");
    assert_non_null(date);
    assert_non_null(tok);
    assert_non_null(auth);
    assert_string_equal(tok, "SESSIONTOKEN");
    assert_non_null(strstr(auth, "Credential=AKIDEXAMPLE/"));
    assert_non_null(strstr(auth, "/us-east-1/bedrock/aws4_request"));
    assert_non_null(
        strstr(auth, "SignedHeaders=accept;content-type;host;x-amz-date;x-amz-security-token"));

    /* The same request signed by the signer directly, at the same time. */
    time_t t;
    assert_int_equal(tg_sigv4_parse_time(date, &t), 0);
    tg_header_t hh[] = {{"host", 4, r.host, strlen(r.host)}, h[0], h[1]};
    tg_sigv4_params_t sp = {.access_key_id = "AKIDEXAMPLE",
                            .secret_access_key = p.creds.secret_access_key,
                            .session_token = "SESSIONTOKEN",
                            .region = "us-east-1",
                            .service = "bedrock",
                            .time = t};
    tg_sigv4_request_t sr = {.method = "POST",
                             .path = r.path,
                             .path_len = r.path_len,
                             .headers = hh,
                             .nheaders = 3,
                             .body = body,
                             .body_len = r.body_len};
    tg_sigv4_out_t so;
    assert_int_equal(tg_sigv4_sign(&sp, &sr, NULL, &so, NULL, NULL), 0);
    assert_non_null(strstr(auth, so.signature));

    /* The cache: a second region takes its own slot, the first is kept. */
    r.region = "eu-west-1";
    assert_int_equal(tg_awsauth_sign(a, &keys, &r, &arena, &o), 0);
    assert_string_equal(keys.scope[0], "us-east-1/bedrock");
    assert_string_equal(keys.scope[1], "eu-west-1/bedrock");
    r.region = "us-east-1";
    assert_int_equal(tg_awsauth_sign(a, &keys, &r, &arena, &o), 0);
    assert_int_equal(keys.next, 2);

    /* Too many headers is an error, not an overflow. */
    tg_header_t many[TG_AWSAUTH_MAX_HEADERS + 1];
    for (size_t i = 0; i < TG_AWSAUTH_MAX_HEADERS + 1; i++)
        many[i] = h[0];
    r.headers = many;
    r.nheaders = TG_AWSAUTH_MAX_HEADERS + 1;
    assert_int_equal(tg_awsauth_sign(a, &keys, &r, &arena, &o), TG_EINVAL);
    tg_arena_free(&arena);
    tg_awsauth_destroy(a);
}

static void test_static_env_missing(void **state)
{
    tg_provider_t p = provider(TG_AWS_AUTH_SIGV4);
    p.creds.access_key_id_env = "TG_NOT_SET_AK";
    p.creds.secret_access_key_env = "TG_NOT_SET_SK";
    tg_awsauth_t *a;
    char err[256];
    assert_int_equal(tg_awsauth_create(&a, &p), 0);
    assert_int_equal(tg_awsauth_start(a), 0);
    assert_int_equal(tg_awsauth_wait(a, 0, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "TG_NOT_SET_AK"));
    tg_awsauth_out_t o;
    tg_awsauth_req_t r = {.method = "POST",
                          .host = "h",
                          .region = "us-east-1",
                          .service = "bedrock",
                          .path = "/",
                          .path_len = 1};
    assert_int_equal(tg_awsauth_sign(a, NULL, &r, NULL, &o), TG_EAUTH);
    tg_awsauth_destroy(a);
}

static void test_url_host(void **state)
{
    char h[128];
    assert_int_equal(tg_config_url_host("https://bedrock-runtime.us-east-1.amazonaws.com", h, 128),
                     0);
    assert_string_equal(h, "bedrock-runtime.us-east-1.amazonaws.com");
    assert_int_equal(tg_config_url_host("https://x.example:443/base", h, sizeof(h)), 0);
    assert_string_equal(h, "x.example");
    assert_int_equal(tg_config_url_host("http://127.0.0.1:8080/p?q", h, sizeof(h)), 0);
    assert_string_equal(h, "127.0.0.1:8080");
    assert_int_equal(tg_config_url_host("http://[::1]:80", h, sizeof(h)), 0);
    assert_string_equal(h, "[::1]");
    assert_int_equal(tg_config_url_host("http://[::1]:9000/", h, sizeof(h)), 0);
    assert_string_equal(h, "[::1]:9000");
    assert_int_equal(tg_config_url_host("https://u:p@host:444", h, sizeof(h)), 0);
    assert_string_equal(h, "host:444");
    assert_int_equal(tg_config_url_host("ftp://x", h, sizeof(h)), TG_EINVAL);
    assert_int_equal(tg_config_url_host("http:///", h, sizeof(h)), TG_EINVAL);
    assert_int_equal(tg_config_url_host("http://a-very-long-host", h, 4), TG_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_static_sigv4),
        cmocka_unit_test(test_static_env_missing),
        cmocka_unit_test(test_url_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
