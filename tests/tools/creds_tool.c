/* creds_tool.c - the AWS credential chain from the command line, for
 * black-box tests.
 *
 *   creds_tool resolve [OPTIONS]
 *   creds_tool watch --seconds N [OPTIONS]
 *
 * OPTIONS: --sts URL --imds URL --container URL --role-arn ARN
 *          --session-name NAME --external-id ID --profile NAME --region R
 *          --timeout-ms N --refresh-before-ms N
 *
 * resolve walks the chain once and prints one JSON line:
 *   {"source":"imds","access_key_id":"ASIA...","has_token":true,
 *    "expires_ms":1700000000000,"secret_sha256":"<hex>","token_sha256":"<hex>"}
 * (digests, never the secret or token themselves), or {"error":..,"code":..}
 * and exit status 1.
 *
 * watch starts a provider and polls it every 5 ms for N seconds. It prints a
 * line {"event":"change",...} each time the access key id changes (with the
 * wall time), and at the end {"event":"summary","keys":[{"access_key_id",
 * "first_ms","last_ms","expires_ms"}],"polls":..,"empty_polls":..}, where
 * last_ms is the last time a poll held that key: a test compares it with the
 * expiry the issuer recorded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "aws/credentials.h"
#include "core/core.h"

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL);
    tg_hex(out, md, 32);
}

static void print_json_str(const char *name, const char *v, int comma)
{
    tg_buf_t b;
    tg_buf_init(&b, 0);
    tg_buf_json_str(&b, v, strlen(v));
    printf("\"%s\":%s%s", name, b.data ? b.data : "\"\"", comma ? "," : "");
    tg_buf_free(&b);
}

static void print_creds(const tg_aws_creds_t *c)
{
    char sh[65], th[65] = "";
    sha256_hex(c->secret_access_key, sh);
    if (c->session_token) sha256_hex(c->session_token, th);
    printf("{");
    print_json_str("source", c->source, 1);
    print_json_str("access_key_id", c->access_key_id, 1);
    printf("\"has_token\":%s,\"expires_ms\":%lld,", c->session_token ? "true" : "false",
           (long long)c->expires_ms);
    print_json_str("secret_sha256", sh, 1);
    print_json_str("token_sha256", th, 0);
    printf("}\n");
}

static int print_error(int rc, const char *err)
{
    printf("{");
    print_json_str("error", err, 1);
    print_json_str("code", tg_strerror(rc), 0);
    printf("}\n");
    fprintf(stderr, "creds_tool: %s\n", err);
    return 1;
}

static int usage(void)
{
    fprintf(stderr, "usage: creds_tool resolve|watch [--seconds N] [--sts URL] [--imds URL] "
                    "[--container URL] [--role-arn ARN] [--session-name NAME] "
                    "[--external-id ID] [--profile NAME] [--region R] [--timeout-ms N] "
                    "[--refresh-before-ms N]\n");
    return 2;
}

typedef struct {
    char id[128];
    int64_t first_ms, last_ms, expires_ms;
} seen_t;

static int watch(const tg_aws_creds_opts_t *o, int seconds)
{
    tg_aws_credprov_t *p;
    char err[1024];
    int rc = tg_aws_credprov_create(&p, o);
    if (rc == 0) rc = tg_aws_credprov_start(p);
    if (rc) return print_error(rc, "could not start the provider");
    rc = tg_aws_credprov_wait(p, 10000, err, sizeof(err));
    if (rc) {
        tg_aws_credprov_destroy(p);
        return print_error(rc, err);
    }
    enum { MAX_SEEN = 1024 };
    static seen_t seen[MAX_SEEN];
    int nseen = 0;
    long polls = 0, empty = 0;
    int64_t end = tg_wall_ms() + (int64_t)seconds * 1000;
    for (int64_t now = tg_wall_ms(); now < end; now = tg_wall_ms()) {
        tg_aws_creds_t *c = tg_aws_credprov_get(p);
        polls++;
        if (!c) {
            empty++;
        } else {
            seen_t *s = nseen ? &seen[nseen - 1] : NULL;
            if ((!s || strcmp(s->id, c->access_key_id) != 0) && nseen < MAX_SEEN) {
                s = &seen[nseen++];
                snprintf(s->id, sizeof(s->id), "%s", c->access_key_id);
                s->first_ms = now;
                s->expires_ms = c->expires_ms;
                printf("{\"event\":\"change\",\"t_ms\":%lld,", (long long)now);
                print_json_str("source", c->source, 1);
                print_json_str("access_key_id", c->access_key_id, 1);
                printf("\"expires_ms\":%lld}\n", (long long)c->expires_ms);
                fflush(stdout);
            }
            if (s) s->last_ms = now;
            tg_aws_creds_release(c);
        }
        usleep(5000);
    }
    tg_aws_credprov_destroy(p);
    printf("{\"event\":\"summary\",\"keys\":[");
    for (int i = 0; i < nseen; i++) {
        printf("%s{", i ? "," : "");
        print_json_str("access_key_id", seen[i].id, 1);
        printf("\"first_ms\":%lld,\"last_ms\":%lld,\"expires_ms\":%lld}",
               (long long)seen[i].first_ms, (long long)seen[i].last_ms,
               (long long)seen[i].expires_ms);
    }
    printf("],\"polls\":%ld,\"empty_polls\":%ld}\n", polls, empty);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage();
    tg_aws_creds_opts_t o = {0};
    int seconds = 5;
    for (int i = 2; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(a, "--sts"))
            o.sts_endpoint = v;
        else if (!strcmp(a, "--imds"))
            o.imds_endpoint = v;
        else if (!strcmp(a, "--container"))
            o.container_endpoint = v;
        else if (!strcmp(a, "--role-arn"))
            o.role_arn = v;
        else if (!strcmp(a, "--session-name"))
            o.role_session_name = v;
        else if (!strcmp(a, "--external-id"))
            o.external_id = v;
        else if (!strcmp(a, "--profile"))
            o.profile = v;
        else if (!strcmp(a, "--region"))
            o.region = v;
        else if (!strcmp(a, "--timeout-ms"))
            o.timeout_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--refresh-before-ms"))
            o.refresh_before_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--seconds"))
            seconds = atoi(v);
        else
            return usage();
    }
    if (!strcmp(argv[1], "watch")) return watch(&o, seconds);
    if (strcmp(argv[1], "resolve")) return usage();
    tg_aws_creds_t *c = NULL;
    char err[1024];
    int rc = tg_aws_creds_resolve(&o, &c, err, sizeof(err));
    if (rc) return print_error(rc, err);
    print_creds(c);
    tg_aws_creds_release(c);
    return 0;
}
