/* test_credentials.c - the AWS credential chain (src/aws/credentials.c).
 *
 * The pure parts (ini lookup, ISO 8601, refresh arithmetic, STS XML and
 * credentials JSON) are tested directly. The links run against environment
 * variables and temp files; the HTTP links (container, IMDSv2, web identity)
 * against a tiny scripted HTTP/1.1 server on 127.0.0.1 written here. The
 * refresh thread is tested with static options and with short-lived
 * credentials from that server: refreshes ahead of expiry, keeps the old
 * credentials while refreshes fail, gives none once they expired, and stops
 * promptly even in the middle of a hanging fetch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aws/credentials.h"
#include "core/core.h"

/* ---- environment and temp files ------------------------------------------ */

static const char *chain_vars[] = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
    "AWS_ENDPOINT_URL_STS",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
};

static char tmpdir[256];

/* A clean slate: no chain variables, an empty HOME, IMDS off (no network). */
static int setup(void **state)
{
    for (size_t i = 0; i < sizeof(chain_vars) / sizeof(chain_vars[0]); i++)
        unsetenv(chain_vars[i]);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/tg-creds-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    setenv("HOME", tmpdir, 1);
    setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to tmpdir/name (creating tmpdir/.aws for ".aws/..."); returns
 * the path in a static buffer. */
static const char *write_tmp(const char *name, const char *text)
{
    static char path[4][512];
    static int slot;
    char *p = path[slot++ & 3];
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/.aws", tmpdir);
    mkdir(dir, 0700);
    snprintf(p, 512, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static tg_aws_creds_t *resolve_ok(const tg_aws_creds_opts_t *o)
{
    tg_aws_creds_t *c = NULL;
    char err[1024];
    int rc = tg_aws_creds_resolve(o, &c, err, sizeof(err));
    if (rc) fail_msg("resolve: %s (%s)", err, tg_strerror(rc));
    assert_non_null(c);
    return c;
}

static int resolve_err(const tg_aws_creds_opts_t *o, char *err, size_t cap)
{
    tg_aws_creds_t *c = NULL;
    int rc = tg_aws_creds_resolve(o, &c, err, cap);
    assert_null(c);
    assert_int_not_equal(rc, 0);
    return rc;
}

/* ---- environment link ------------------------------------------------------ */

static void test_env_link(void **state)
{
    tg_aws_creds_opts_t o = {0};
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->source, "environment");
    assert_string_equal(c->access_key_id, "AKIDENV");
    assert_string_equal(c->secret_access_key, "envsecret");
    assert_null(c->session_token);
    assert_int_equal(c->expires_ms, 0);
    tg_aws_creds_release(c);

    setenv("AWS_SESSION_TOKEN", "envtoken", 1);
    setenv("AWS_CREDENTIAL_EXPIRATION", "2999-01-02T03:04:05Z", 1);
    c = resolve_ok(&o);
    assert_string_equal(c->session_token, "envtoken");
    int64_t want;
    assert_int_equal(tg_aws_parse_iso8601("2999-01-02T03:04:05Z", &want), 0);
    assert_int_equal(c->expires_ms, want);
    tg_aws_creds_release(c);

    /* An id without a secret stops the chain, naming the link, no secret. */
    unsetenv("AWS_SECRET_ACCESS_KEY");
    char err[512];
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "environment:"));
    assert_non_null(strstr(err, "AWS_SECRET_ACCESS_KEY"));
    assert_null(strstr(err, "AKIDENV"));
}

static void test_nothing_found(void **state)
{
    tg_aws_creds_opts_t o = {0};
    char err[1024];
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EAUTH);
    /* Every link says why it passed. */
    assert_non_null(strstr(err, "no AWS credentials found"));
    assert_non_null(strstr(err, "environment:"));
    assert_non_null(strstr(err, "shared-files: no profile \"default\""));
    assert_non_null(strstr(err, "web-identity:"));
    assert_non_null(strstr(err, "container:"));
    assert_non_null(strstr(err, "imds: disabled"));
}

static void test_static_opts(void **state)
{
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    tg_aws_creds_opts_t o = {.access_key_id = "AKIDSTATIC", .secret_access_key = "s"};
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->source, "static");
    assert_string_equal(c->access_key_id, "AKIDSTATIC");
    tg_aws_creds_release(c);
    o.secret_access_key = NULL;
    char err[256];
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "static:"));
}

/* ---- shared files ------------------------------------------------------------ */

static const char CREDS_FILE[] = "# a comment\n"
                                 "; another\n"
                                 "[default]\n"
                                 "aws_access_key_id = AKIDDEFAULT\n"
                                 "aws_secret_access_key=defsecret   ; inline comment\n"
                                 "\n"
                                 "[both]\r\n"
                                 "aws_access_key_id = AKIDCREDSFILE\r\n"
                                 "aws_secret_access_key = credsfilesecret\r\n"
                                 "[profile notthisway]\n"
                                 "aws_access_key_id = AKIDWRONG\n"
                                 "aws_secret_access_key = wrong\n";

static const char CONFIG_FILE[] = "[default]\n"
                                  "region = eu-west-1\n"
                                  "[profile both]\n"
                                  "aws_access_key_id = AKIDCONFIGFILE\n"
                                  "aws_secret_access_key = configsecret\n"
                                  "aws_session_token = configtoken\n"
                                  "[ profile   spaced ]\n"
                                  "  aws_access_key_id\t=\tAKIDSPACED\n"
                                  "aws_secret_access_key = spacedsecret # comment\n"
                                  "s3 =\n"
                                  "  aws_access_key_id = AKIDCONTINUATION\n"
                                  "[bare]\n"
                                  "aws_access_key_id = AKIDBARE\n"
                                  "aws_secret_access_key = baresecret\n"
                                  "[profile partial]\n"
                                  "aws_access_key_id = AKIDPARTIAL\n"
                                  "[profile empty]\n"
                                  "region = us-west-2\n";

static void use_files(void)
{
    setenv("AWS_SHARED_CREDENTIALS_FILE", write_tmp("creds", CREDS_FILE), 1);
    setenv("AWS_CONFIG_FILE", write_tmp("conf", CONFIG_FILE), 1);
}

static void expect_profile(const char *profile, const char *akid, const char *token)
{
    tg_aws_creds_opts_t o = {.profile = profile};
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->source, "shared-files");
    assert_string_equal(c->access_key_id, akid);
    if (token)
        assert_string_equal(c->session_token, token);
    else
        assert_null(c->session_token);
    assert_int_equal(c->expires_ms, 0);
    tg_aws_creds_release(c);
}

static void test_files_profiles(void **state)
{
    use_files();
    expect_profile(NULL, "AKIDDEFAULT", NULL);
    expect_profile("default", "AKIDDEFAULT", NULL);
    /* Key by key, the credentials file beats the config file. */
    expect_profile("both", "AKIDCREDSFILE", "configtoken");
    expect_profile("spaced", "AKIDSPACED", NULL);

    tg_aws_creds_opts_t o = {.profile = "spaced"};
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->secret_access_key, "spacedsecret");
    tg_aws_creds_release(c);
    o.profile = NULL;
    c = resolve_ok(&o);
    assert_string_equal(c->secret_access_key, "defsecret");
    tg_aws_creds_release(c);

    /* "[bare]" in the config file and "[profile x]" in the credentials file
     * are not profiles "bare" and "notthisway". */
    char err[1024];
    o.profile = "bare";
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "profile \"bare\" not found"));
    o.profile = "notthisway";
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);

    /* A partial profile stops the chain; one without keys passes. */
    o.profile = "partial";
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "shared-files: profile \"partial\" has aws_access_key_id but no "
                                "aws_secret_access_key"));
    assert_null(strstr(err, "AKIDPARTIAL"));
    o.profile = "empty";
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "profile \"empty\" holds no credentials"));
}

static void test_files_aws_profile_and_precedence(void **state)
{
    use_files();
    setenv("AWS_PROFILE", "both", 1);
    tg_aws_creds_opts_t o = {0};
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->access_key_id, "AKIDCREDSFILE");
    tg_aws_creds_release(c);

    /* The environment beats the files, even with AWS_PROFILE... */
    setenv("AWS_ACCESS_KEY_ID", "AKIDENV", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
    c = resolve_ok(&o);
    assert_string_equal(c->source, "environment");
    tg_aws_creds_release(c);
    /* ...but not a profile named in the options. */
    o.profile = "spaced";
    c = resolve_ok(&o);
    assert_string_equal(c->access_key_id, "AKIDSPACED");
    tg_aws_creds_release(c);

    /* AWS_PROFILE naming a missing profile is an error, not a fall-through. */
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    o.profile = NULL;
    setenv("AWS_PROFILE", "nosuch", 1);
    char err[1024];
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "profile \"nosuch\" not found"));
}

static void test_files_home_and_missing(void **state)
{
    /* Default paths under HOME. */
    write_tmp(".aws/credentials", "[default]\naws_access_key_id=AKIDHOME\n"
                                  "aws_secret_access_key=homesecret\n");
    tg_aws_creds_opts_t o = {0};
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->access_key_id, "AKIDHOME");
    tg_aws_creds_release(c);
    /* Only a config file. */
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
    write_tmp(".aws/config", "[profile x]\naws_access_key_id=AKIDCONF\n"
                             "aws_secret_access_key=confsecret\n");
    o.profile = "x";
    c = resolve_ok(&o);
    assert_string_equal(c->access_key_id, "AKIDCONF");
    tg_aws_creds_release(c);
    /* "~/" in the variables. */
    setenv("AWS_CONFIG_FILE", "~/.aws/config", 1);
    c = resolve_ok(&o);
    assert_string_equal(c->access_key_id, "AKIDCONF");
    tg_aws_creds_release(c);
    /* Neither file: the link passes with a note naming both paths. */
    setenv("AWS_CONFIG_FILE", "/nonexistent/config", 1);
    o.profile = NULL;
    char err[1024];
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "/nonexistent/credentials"));
    assert_non_null(strstr(err, "/nonexistent/config"));
    /* A file that cannot be read (a directory) is an error. */
    setenv("AWS_CONFIG_FILE", tmpdir, 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EIO);
    assert_non_null(strstr(err, "shared-files:"));
}

static void test_files_role_errors(void **state)
{
    write_tmp(".aws/config", "[profile r1]\nrole_arn = arn:aws:iam::1:role/a\n"
                             "[profile r2]\nrole_arn = arn:aws:iam::1:role/a\n"
                             "source_profile = r3\n"
                             "[profile r3]\nrole_arn = arn:aws:iam::1:role/b\n"
                             "source_profile = r2\n"
                             "[profile r4]\nrole_arn = arn:aws:iam::1:role/a\n"
                             "credential_source = Nowhere\n"
                             "[profile r5]\nrole_arn = arn:aws:iam::1:role/a\n"
                             "source_profile = r5\n");
    char err[1024];
    tg_aws_creds_opts_t o = {.profile = "r1"};
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "has role_arn but no source_profile"));
    o.profile = "r2";
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "a cycle?"));
    o.profile = "r4";
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "unknown credential_source \"Nowhere\""));
    o.profile = "r5";
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "source profile \"r5\" holds no credentials"));
}

/* ---- ini edge cases ---------------------------------------------------------- */

static void test_ini_edges(void **state)
{
    char v[64];
    int found;
    const char *t = "[a]\n"
                    "Key = one\n"
                    "key=two\n" /* last wins, names case-insensitive */
                    "empty =\n"
                    "hash = a#b ;c\n"
                    "url = http://x/?q=1\n"
                    "multi =\n"
                    "   sub = 1\n"
                    "\t other = 2\n"
                    "[b] trailing\n"
                    "k=b\n"
                    "[a]\n"
                    "again = yes";
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "KEY", v, sizeof(v), &found), 0);
    assert_string_equal(v, "two");
    assert_true(found);
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "empty", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "");
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "hash", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "a#b");
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "url", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "http://x/?q=1");
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "sub", v, sizeof(v), NULL), TG_ENOTFOUND);
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "other", v, sizeof(v), NULL), TG_ENOTFOUND);
    assert_int_equal(tg_aws_ini_get(t, "b", 0, "k", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "b");
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "again", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "yes");
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "k", v, sizeof(v), &found), TG_ENOTFOUND);
    assert_true(found);
    assert_int_equal(tg_aws_ini_get(t, "c", 0, "k", v, sizeof(v), &found), TG_ENOTFOUND);
    assert_false(found);
    assert_int_equal(tg_aws_ini_get(t, "a", 0, "key", v, 3, NULL), TG_ETOOBIG);
    /* The config file's naming: [profile x], and [default] only for default. */
    const char *c = "[default]\nk=d\n[profile\tx]\nk=x\n[y]\nk=y\n[profilez]\nk=z\n";
    assert_int_equal(tg_aws_ini_get(c, "default", 1, "k", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "d");
    assert_int_equal(tg_aws_ini_get(c, "x", 1, "k", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "x");
    assert_int_equal(tg_aws_ini_get(c, "y", 1, "k", v, sizeof(v), &found), TG_ENOTFOUND);
    assert_false(found);
    assert_int_equal(tg_aws_ini_get(c, "z", 1, "k", v, sizeof(v), &found), TG_ENOTFOUND);
    assert_int_equal(
        tg_aws_ini_get("[profile default]\nk=pd\n", "default", 1, "k", v, sizeof(v), NULL), 0);
    assert_string_equal(v, "pd");
    /* Oddities that must not crash: no section, unclosed bracket, no '='. */
    assert_int_equal(tg_aws_ini_get("k=v\n[a\nk=v\nnovalue\n", "a", 0, "k", v, sizeof(v), &found),
                     TG_ENOTFOUND);
    assert_int_equal(tg_aws_ini_get("", "a", 0, "k", v, sizeof(v), &found), TG_ENOTFOUND);
}

/* ---- time and scheduling --------------------------------------------------- */

static void test_iso8601(void **state)
{
    int64_t ms;
    assert_int_equal(tg_aws_parse_iso8601("1970-01-01T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(tg_aws_parse_iso8601("2015-08-30T12:36:00Z", &ms), 0);
    assert_int_equal(ms, 1440938160000LL);
    assert_int_equal(tg_aws_parse_iso8601("2015-08-30T12:36:00.5Z", &ms), 0);
    assert_int_equal(ms, 1440938160500LL);
    assert_int_equal(tg_aws_parse_iso8601("2015-08-30T12:36:00.123456Z", &ms), 0);
    assert_int_equal(ms, 1440938160123LL);
    assert_int_equal(tg_aws_parse_iso8601("2015-08-30T14:36:00+02:00", &ms), 0);
    assert_int_equal(ms, 1440938160000LL);
    assert_int_equal(tg_aws_parse_iso8601("2015-08-30T07:06:00-0530", &ms), 0);
    assert_int_equal(ms, 1440938160000LL);
    assert_int_equal(tg_aws_parse_iso8601("2024-02-29T23:59:59z", &ms), 0);
    assert_int_equal(ms, 1709251199000LL);
    assert_int_equal(tg_aws_parse_iso8601("2000-01-01 00:00:00Z", &ms), 0);
    assert_int_equal(ms, 946684800000LL);
    /* Round trip with core's formatter. */
    char iso[32];
    tg_iso8601_ms(iso, sizeof(iso), 1767225600123LL);
    assert_int_equal(tg_aws_parse_iso8601(iso, &ms), 0);
    assert_int_equal(ms, 1767225600123LL);
    const char *bad[] = {"",
                         "2015-08-30",
                         "2015-08-30T12:36:00",
                         "2015-08-30T12:36:00Q",
                         "2015-13-30T12:36:00Z",
                         "2023-02-29T12:36:00Z",
                         "2015-08-30T24:00:00Z",
                         "2015-08-30T12:60:00Z",
                         "2015-08-30T12:36:00.Z",
                         "2015-08-30T12:36:00Zjunk",
                         "20150830T123600Z",
                         "2015-08-30T12:36:00+2",
                         NULL};
    for (int i = 0; bad[i]; i++)
        if (tg_aws_parse_iso8601(bad[i], &ms) != TG_EINVAL) fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(tg_aws_parse_iso8601(NULL, &ms), TG_EINVAL);
}

static void test_refresh_schedule(void **state)
{
    const int64_t now = 1000000;
    /* Never for credentials that do not expire. */
    assert_int_equal(tg_aws_refresh_at(now, 0, 300000), 0);
    /* An hour left: five minutes ahead. */
    assert_int_equal(tg_aws_refresh_at(now, now + 3600000, 300000), now + 3300000);
    /* Six minutes left: half-life (3 min) comes later than 5 min ahead. */
    assert_int_equal(tg_aws_refresh_at(now, now + 360000, 300000), now + 180000);
    /* Three seconds left, refresh one second ahead. */
    assert_int_equal(tg_aws_refresh_at(now, now + 3000, 1000), now + 2000);
    assert_int_equal(tg_aws_refresh_at(now, now + 3000, 300000), now + 1500);
    /* Floors: not sooner than the minimum, never after expiry. */
    assert_int_equal(tg_aws_refresh_at(now, now + 400, 300000), now + TG_AWS_REFRESH_MIN_MS);
    assert_int_equal(tg_aws_refresh_at(now, now + 100, 300000), now + 100);
    assert_int_equal(tg_aws_refresh_at(now, now - 5, 300000), now);
    /* Backoff: 1 s doubling to 30 s. */
    uint32_t d = 0;
    const uint32_t want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        d = tg_aws_retry_delay(d);
        assert_int_equal(d, want[i]);
    }
}

/* ---- response parsing --------------------------------------------------------- */

static const char STS_WEB_OK[] =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>system:sa</SubjectFromWebIdentityToken>\n"
    "    <Audience>sts.amazonaws.com</Audience>\n"
    "    <AssumedRoleUser>\n"
    "      <Arn>arn:aws:sts::1:assumed-role/r/s</Arn>\n"
    "      <AssumedRoleId>AROA:s</AssumedRoleId>\n"
    "    </AssumedRoleUser>\n"
    "    <Credentials>\n"
    "      <SessionToken>tok/en+with=&amp;amp&#43;&#x2f;&#xZZ;</SessionToken>\n"
    "      <SecretAccessKey>\n        wJalr/secret\n      </SecretAccessKey>\n"
    "      <Expiration>2030-01-02T03:04:05Z</Expiration>\n"
    "      <AccessKeyId>ASIAWEB</AccessKeyId>\n"
    "    </Credentials>\n"
    "    <Provider>www.amazon.com</Provider>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "  <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

static const char STS_ERR[] =
    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <Error>\n    <Type>Sender</Type>\n    <Code>InvalidIdentityToken</Code>\n"
    "    <Message>Token &lt;expired&gt;</Message>\n  </Error>\n"
    "  <RequestId>r-2</RequestId>\n</ErrorResponse>\n";

static void test_parse_sts(void **state)
{
    tg_aws_creds_t *c;
    char err[256];
    assert_int_equal(
        tg_aws_parse_sts_xml(STS_WEB_OK, strlen(STS_WEB_OK), "web-identity", &c, err, sizeof(err)),
        0);
    assert_string_equal(c->access_key_id, "ASIAWEB");
    assert_string_equal(c->secret_access_key, "wJalr/secret");
    assert_string_equal(c->session_token, "tok/en+with=&amp+/&#xZZ;");
    assert_string_equal(c->source, "web-identity");
    int64_t want;
    tg_aws_parse_iso8601("2030-01-02T03:04:05Z", &want);
    assert_int_equal(c->expires_ms, want);
    tg_aws_creds_release(c);

    const char *ar = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                     "<AssumeRoleResult><SourceIdentity/><AssumedRoleUser><Arn>a</Arn>"
                     "</AssumedRoleUser><Credentials><AccessKeyId>ASIAAR</AccessKeyId>"
                     "<SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
                     "<Expiration>2030-01-02T03:04:05.250Z</Expiration></Credentials>"
                     "</AssumeRoleResult></AssumeRoleResponse>";
    assert_int_equal(tg_aws_parse_sts_xml(ar, strlen(ar), "assume-role", &c, err, sizeof(err)), 0);
    assert_string_equal(c->access_key_id, "ASIAAR");
    assert_int_equal(c->expires_ms, want + 250);
    tg_aws_creds_release(c);

    assert_int_equal(tg_aws_parse_sts_xml(STS_ERR, strlen(STS_ERR), "x", &c, err, sizeof(err)),
                     TG_EAUTH);
    assert_null(c);
    assert_string_equal(err, "STS error InvalidIdentityToken: Token <expired>");

    const char *nokey = "<Credentials><SecretAccessKey>s</SecretAccessKey>"
                        "<Expiration>2030-01-02T03:04:05Z</Expiration></Credentials>";
    assert_int_equal(tg_aws_parse_sts_xml(nokey, strlen(nokey), "x", &c, err, sizeof(err)),
                     TG_EPROTO);
    const char *noexp = "<Credentials><AccessKeyId>a</AccessKeyId>"
                        "<SecretAccessKey>s</SecretAccessKey></Credentials>";
    assert_int_equal(tg_aws_parse_sts_xml(noexp, strlen(noexp), "x", &c, err, sizeof(err)),
                     TG_EPROTO);
    const char *badexp = "<Credentials><AccessKeyId>a</AccessKeyId><SecretAccessKey>s"
                         "</SecretAccessKey><Expiration>soon</Expiration></Credentials>";
    assert_int_equal(tg_aws_parse_sts_xml(badexp, strlen(badexp), "x", &c, err, sizeof(err)),
                     TG_EPROTO);
    assert_non_null(strstr(err, "Expiration"));
    const char *junk[] = {"",
                          "<",
                          "<Credentials",
                          "<Credentials>",
                          "<Credentials><AccessKeyId>",
                          "not xml at all",
                          "<Error><Code>X",
                          NULL};
    for (int i = 0; junk[i]; i++) {
        assert_int_not_equal(
            tg_aws_parse_sts_xml(junk[i], strlen(junk[i]), "x", &c, err, sizeof(err)), 0);
        assert_null(c);
    }
    /* Bounded: the parser never reads past n. */
    assert_int_not_equal(tg_aws_parse_sts_xml(STS_WEB_OK, 200, "x", &c, err, sizeof(err)), 0);
}

static void test_parse_json(void **state)
{
    tg_aws_creds_t *c;
    char err[256];
    const char *imds =
        "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2024-01-01T00:00:00Z\",\n"
        "  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIAIMDS\",\n"
        "  \"SecretAccessKey\" : \"imdssecret\",\n  \"Token\" : \"imdstoken\",\n"
        "  \"Expiration\" : \"2030-01-02T03:04:05Z\"\n}";
    assert_int_equal(tg_aws_parse_creds_json(imds, strlen(imds), "imds", &c, err, sizeof(err)), 0);
    assert_string_equal(c->access_key_id, "ASIAIMDS");
    assert_string_equal(c->secret_access_key, "imdssecret");
    assert_string_equal(c->session_token, "imdstoken");
    assert_string_equal(c->source, "imds");
    assert_true(c->expires_ms > 0);
    tg_aws_creds_release(c);

    const char *ecs =
        "{\"AccessKeyId\":\"ASIAECS\",\"SecretAccessKey\":\"s\",\"Token\":\"t\","
        "\"Expiration\":\"2030-01-02T03:04:05Z\",\"RoleArn\":\"arn:aws:iam::1:role/x\"}";
    assert_int_equal(tg_aws_parse_creds_json(ecs, strlen(ecs), "container", &c, err, sizeof(err)),
                     0);
    assert_string_equal(c->access_key_id, "ASIAECS");
    tg_aws_creds_release(c);

    const char *failed = "{\"Code\":\"AssumeRoleUnauthorizedAccess\",\"Message\":\"nope\"}";
    assert_int_equal(tg_aws_parse_creds_json(failed, strlen(failed), "imds", &c, err, sizeof(err)),
                     TG_EAUTH);
    assert_string_equal(err, "Code AssumeRoleUnauthorizedAccess: nope");
    const char *bad[] = {"",
                         "[]",
                         "{",
                         "{\"AccessKeyId\":\"a\"}",
                         "{\"AccessKeyId\":\"a\",\"SecretAccessKey\":\"s\",\"Expiration\":\"x\"}",
                         "{\"AccessKeyId\":1,\"SecretAccessKey\":\"s\"}",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        assert_int_not_equal(
            tg_aws_parse_creds_json(bad[i], strlen(bad[i]), "x", &c, err, sizeof(err)), 0);
        assert_null(c);
    }
}

/* ---- a scripted HTTP server on 127.0.0.1 ------------------------------------ */

typedef struct {
    char method[8], path[256], auth[256], imds_token[128], ttl[16];
    char body[4096];
    char head[4096]; /* request line and headers */
} http_req_t;

typedef struct fake fake_t;
/* Writes the whole response (status line, headers, body) into out. */
typedef void (*fake_fn)(fake_t *f, const http_req_t *req, char *out, size_t cap);

struct fake {
    int fd, port;
    pthread_t thread;
    atomic_int stop, hits, fail, hang;
    fake_fn fn;
    int lifetime_ms; /* credentials it issues expire this long after */
    atomic_int serial;
};

static void header_value(const char *head, const char *name, char *out, size_t cap)
{
    out[0] = '\0';
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            size_t l = strcspn(v, "\r\n");
            snprintf(out, cap, "%.*s", (int)l, v);
            return;
        }
    }
}

static void *fake_main(void *arg)
{
    fake_t *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd pfd = {f->fd, POLLIN, 0};
        if (poll(&pfd, 1, 20) <= 0) continue;
        int c = accept(f->fd, NULL, NULL);
        if (c < 0) continue;
        char buf[8192];
        size_t len = 0;
        char *end = NULL;
        while (len < sizeof(buf) - 1) {
            ssize_t n = recv(c, buf + len, sizeof(buf) - 1 - len, 0);
            if (n <= 0) break;
            len += (size_t)n;
            buf[len] = '\0';
            if ((end = strstr(buf, "\r\n\r\n"))) {
                char cl[16];
                header_value(buf, "Content-Length", cl, sizeof(cl));
                if (len >= (size_t)(end + 4 - buf) + (size_t)atoi(cl)) break;
            }
        }
        buf[len] = '\0';
        http_req_t req = {0};
        sscanf(buf, "%7s %255s", req.method, req.path);
        header_value(buf, "Authorization", req.auth, sizeof(req.auth));
        header_value(buf, "X-aws-ec2-metadata-token", req.imds_token, sizeof(req.imds_token));
        header_value(buf, "X-aws-ec2-metadata-token-ttl-seconds", req.ttl, sizeof(req.ttl));
        if (end) snprintf(req.body, sizeof(req.body), "%s", end + 4);
        snprintf(req.head, sizeof(req.head), "%.*s", end ? (int)(end - buf) : (int)len, buf);
        atomic_fetch_add(&f->hits, 1);
        while (atomic_load(&f->hang) && !atomic_load(&f->stop))
            usleep(10000);
        char out[8192];
        f->fn(f, &req, out, sizeof(out));
        send(c, out, strlen(out), MSG_NOSIGNAL);
        close(c);
    }
    return NULL;
}

static void fake_start(fake_t *f, fake_fn fn)
{
    memset(f, 0, sizeof(*f));
    f->fn = fn;
    f->lifetime_ms = 60000;
    f->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->fd, 16), 0);
    socklen_t al = sizeof(a);
    getsockname(f->fd, (struct sockaddr *)&a, &al);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(fake_t *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    close(f->fd);
}

static void respond(char *out, size_t cap, int status, const char *ctype, const char *body)
{
    snprintf(out, cap,
             "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
             "\r\n%s",
             status, ctype, strlen(body), body);
}

/* Fresh credentials: "ASIA<serial>", expiring lifetime_ms from now. */
static void creds_json(fake_t *f, char *out, size_t cap, int imds)
{
    char exp[32], body[1024];
    tg_iso8601_ms(exp, sizeof(exp), tg_wall_ms() + f->lifetime_ms);
    int n = atomic_fetch_add(&f->serial, 1) + 1;
    snprintf(body, sizeof(body),
             "{%s\"AccessKeyId\":\"ASIA%04d\",\"SecretAccessKey\":\"secret%d\",\"Token\":\"tok%d\","
             "\"Expiration\":\"%s\"}",
             imds ? "\"Code\":\"Success\",\"LastUpdated\":\"2024-01-01T00:00:00Z\","
                    "\"Type\":\"AWS-HMAC\","
                  : "",
             n, n, n, exp);
    respond(out, cap, 200, "application/json", body);
}

static void container_fn(fake_t *f, const http_req_t *req, char *out, size_t cap)
{
    if (atomic_load(&f->fail))
        respond(out, cap, 500, "application/json", "{\"code\":\"Boom\",\"message\":\"down\"}");
    else if (strcmp(req->method, "GET") || strcmp(req->path, "/creds"))
        respond(out, cap, 404, "application/json", "{}");
    else if (strcmp(req->auth, "Bearer tok-123"))
        respond(out, cap, 401, "application/json",
                "{\"code\":\"Unauthorized\",\"message\":\"bad token\"}");
    else
        creds_json(f, out, cap, 0);
}

static void imds_fn(fake_t *f, const http_req_t *req, char *out, size_t cap)
{
    static const char role_path[] = "/latest/meta-data/iam/security-credentials/";
    if (!strcmp(req->method, "PUT") && !strcmp(req->path, "/latest/api/token")) {
        respond(out, cap, strcmp(req->ttl, "21600") ? 400 : 200, "text/plain", "imds-tok");
    } else if (strcmp(req->method, "GET") || strcmp(req->imds_token, "imds-tok")) {
        respond(out, cap, 401, "text/plain", "");
    } else if (!strcmp(req->path, role_path)) {
        respond(out, cap, 200, "text/plain", "my-role\n");
    } else if (!strncmp(req->path, role_path, sizeof(role_path) - 1) &&
               !strcmp(req->path + sizeof(role_path) - 1, "my-role")) {
        creds_json(f, out, cap, 1);
    } else {
        respond(out, cap, 404, "text/plain", "");
    }
}

static void sts_fn(fake_t *f, const http_req_t *req, char *out, size_t cap)
{
    if (!strstr(req->body, "Action=AssumeRoleWithWebIdentity") ||
        !strstr(req->body, "RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fweb") ||
        !strstr(req->body, "RoleSessionName=sess") ||
        !strstr(req->body, "WebIdentityToken=jwt.tok%2Bx")) {
        respond(out, cap, 400, "text/xml", STS_ERR);
        return;
    }
    char exp[32], body[2048];
    tg_iso8601_ms(exp, sizeof(exp), tg_wall_ms() + f->lifetime_ms);
    snprintf(body, sizeof(body),
             "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/"
             "2011-06-15/\"><AssumeRoleWithWebIdentityResult><Credentials>"
             "<AccessKeyId>ASIAWEB%d</AccessKeyId><SecretAccessKey>s</SecretAccessKey>"
             "<SessionToken>t</SessionToken><Expiration>%s</Expiration></Credentials>"
             "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
             atomic_fetch_add(&f->serial, 1) + 1, exp);
    respond(out, cap, 200, "text/xml", body);
}

/* AssumeRole: checks the request's shape (the signature itself is verified by
 * the black-box tests with AWS's own signer). */
static void assume_fn(fake_t *f, const http_req_t *req, char *out, size_t cap)
{
    char date[32], tok[64], ctype[128];
    header_value(req->head, "X-Amz-Date", date, sizeof(date));
    header_value(req->head, "X-Amz-Security-Token", tok, sizeof(tok));
    header_value(req->head, "Content-Type", ctype, sizeof(ctype));
    char want[256];
    snprintf(want, sizeof(want),
             "AWS4-HMAC-SHA256 Credential=AKIDBASE/%.8s/eu-central-1/sts/aws4_request, "
             "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=",
             date);
    int ok =
        !strcmp(req->method, "POST") && !strcmp(req->path, "/") &&
        !strncmp(req->auth, want, strlen(want)) && strlen(req->auth) == strlen(want) + 64 &&
        !strcmp(tok, "basetoken") &&
        !strcmp(ctype, "application/x-www-form-urlencoded; charset=utf-8") &&
        !strcmp(req->body, "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1"
                           "%3Arole%2Fup&RoleSessionName=s1&ExternalId=ext%20id");
    if (!ok) {
        respond(out, cap, 403, "text/xml",
                "<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code>"
                "<Message>bad</Message></Error></ErrorResponse>");
        return;
    }
    char exp[32], body[1024];
    tg_iso8601_ms(exp, sizeof(exp), tg_wall_ms() + f->lifetime_ms);
    snprintf(body, sizeof(body),
             "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
             "<AssumeRoleResult><Credentials><AccessKeyId>ASIAUP</AccessKeyId>"
             "<SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken>"
             "<Expiration>%s</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>",
             exp);
    respond(out, cap, 200, "text/xml", body);
}

/* ---- HTTP links ------------------------------------------------------------------ */

static void test_container_link(void **state)
{
    fake_t f;
    fake_start(&f, container_fn);
    char ep[64], url[128], err[1024];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f.port);
    tg_aws_creds_opts_t o = {.container_endpoint = ep};

    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/creds", 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer tok-123", 1);
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->source, "container");
    assert_string_equal(c->access_key_id, "ASIA0001");
    assert_string_equal(c->session_token, "tok1");
    tg_aws_creds_release(c);

    /* A wrong token is refused; the message has the status and code, never the token. */
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer wrong", 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "container: GET"));
    assert_non_null(strstr(err, "HTTP 401 Unauthorized: bad token"));
    assert_null(strstr(err, "wrong"));

    /* The token file wins over the variable and is trimmed. */
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", write_tmp("ctok", "Bearer tok-123\n"), 1);
    c = resolve_ok(&o);
    tg_aws_creds_release(c);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", write_tmp("ctok2", "a\r\nX-Evil: 1"), 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "line break"));
    unsetenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");

    /* FULL_URI: loopback allowed; other plain-http hosts refused. */
    unsetenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer tok-123", 1);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/creds", f.port);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    c = resolve_ok(&o);
    tg_aws_creds_release(c);
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://example.com/creds", 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "neither https nor"));

    /* Unreachable: the link's error, not a fall-through to IMDS. */
    snprintf(url, sizeof(url), "http://127.0.0.1:1/creds");
    setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", url, 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONNECT);
    assert_non_null(strstr(err, "container: GET http://127.0.0.1:1/creds"));
    fake_stop(&f);
}

static void test_imds_link(void **state)
{
    fake_t f;
    fake_start(&f, imds_fn);
    char ep[64], err[1024];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d/", f.port);
    unsetenv("AWS_EC2_METADATA_DISABLED");
    tg_aws_creds_opts_t o = {.imds_endpoint = ep};
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->source, "imds");
    assert_string_equal(c->access_key_id, "ASIA0001");
    assert_int_equal(atomic_load(&f.hits), 3); /* token, role name, role */
    tg_aws_creds_release(c);
    /* The environment's endpoint, when the options name none. */
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", ep, 1);
    o.imds_endpoint = NULL;
    c = resolve_ok(&o);
    tg_aws_creds_release(c);
    /* Disabled: never asked. */
    setenv("AWS_EC2_METADATA_DISABLED", "TRUE", 1);
    int hits = atomic_load(&f.hits);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EAUTH);
    assert_int_equal(atomic_load(&f.hits), hits);
    /* Nothing listening. */
    unsetenv("AWS_EC2_METADATA_DISABLED");
    setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1", 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONNECT);
    assert_non_null(strstr(err, "imds: PUT http://127.0.0.1:1/latest/api/token"));
    fake_stop(&f);
}

static void test_web_identity_link(void **state)
{
    fake_t f;
    fake_start(&f, sts_fn);
    char ep[64], err[1024];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f.port);
    tg_aws_creds_opts_t o = {.sts_endpoint = ep};
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", write_tmp("jwt", "jwt.tok+x\n"), 1);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::1:role/web", 1);
    setenv("AWS_ROLE_SESSION_NAME", "sess", 1);
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->source, "web-identity");
    assert_string_equal(c->access_key_id, "ASIAWEB1");
    tg_aws_creds_release(c);
    /* STS refuses: its code and message, not the token. */
    setenv("AWS_ROLE_SESSION_NAME", "other", 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EAUTH);
    assert_non_null(
        strstr(err, "web-identity: STS AssumeRoleWithWebIdentity at http://127.0.0.1:"));
    assert_non_null(strstr(err, "HTTP 400, STS error InvalidIdentityToken"));
    assert_null(strstr(err, "jwt.tok"));
    /* Half configured, or an unreadable file. */
    unsetenv("AWS_ROLE_ARN");
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "AWS_ROLE_ARN"));
    setenv("AWS_ROLE_ARN", "arn:aws:iam::1:role/web", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/jwt", 1);
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "/nonexistent/jwt"));

    /* The same through a profile's web_identity_token_file. */
    unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    unsetenv("AWS_ROLE_ARN");
    char conf[512];
    snprintf(conf, sizeof(conf),
             "[profile wi]\nrole_arn = arn:aws:iam::1:role/web\nrole_session_name = sess\n"
             "web_identity_token_file = %s\n",
             write_tmp("jwt2", "jwt.tok+x"));
    write_tmp(".aws/config", conf);
    o.profile = "wi";
    c = resolve_ok(&o);
    assert_string_equal(c->source, "web-identity");
    tg_aws_creds_release(c);
    fake_stop(&f);
}

static void test_assume_role_on_top(void **state)
{
    fake_t f;
    fake_start(&f, assume_fn);
    char ep[64], err[1024];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f.port);
    tg_aws_creds_opts_t o = {.access_key_id = "AKIDBASE",
                             .secret_access_key = "basesecret",
                             .session_token = "basetoken",
                             .role_arn = "arn:aws:iam::1:role/up",
                             .role_session_name = "s1",
                             .external_id = "ext id",
                             .region = "eu-central-1",
                             .sts_endpoint = ep};
    tg_aws_creds_t *c = resolve_ok(&o);
    assert_string_equal(c->source, "assume-role");
    assert_string_equal(c->access_key_id, "ASIAUP");
    assert_true(c->expires_ms > tg_wall_ms());
    tg_aws_creds_release(c);
    o.region = "us-west-2"; /* signed for another region: refused */
    assert_int_equal(resolve_err(&o, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "assume-role (over static): STS AssumeRole at http://127.0.0.1:"));
    assert_non_null(strstr(err, "HTTP 403, STS error SignatureDoesNotMatch: bad"));
    assert_null(strstr(err, "basesecret"));
    assert_null(strstr(err, "basetoken"));

    /* A profile's role_arn over its source_profile (in the credentials file). */
    write_tmp(".aws/config", "[profile up]\nrole_arn = arn:aws:iam::1:role/up\n"
                             "source_profile = base\nrole_session_name = s1\n"
                             "external_id = ext id\n");
    write_tmp(".aws/credentials", "[base]\naws_access_key_id = AKIDBASE\n"
                                  "aws_secret_access_key = basesecret\n"
                                  "aws_session_token = basetoken\n");
    tg_aws_creds_opts_t po = {.profile = "up", .region = "eu-central-1", .sts_endpoint = ep};
    c = resolve_ok(&po);
    assert_string_equal(c->source, "assume-role");
    assert_string_equal(c->access_key_id, "ASIAUP");
    tg_aws_creds_release(c);
    fake_stop(&f);
}

/* ---- the provider --------------------------------------------------------------- */

static void test_provider_static(void **state)
{
    tg_aws_creds_opts_t o = {.access_key_id = "AKIDSTATIC", .secret_access_key = "s"};
    tg_aws_credprov_t *p;
    char err[256];
    assert_int_equal(tg_aws_credprov_create(&p, &o), 0);
    assert_null(tg_aws_credprov_get(p));
    assert_int_equal(tg_aws_credprov_wait(p, 10, err, sizeof(err)), TG_EINVAL);
    assert_int_equal(tg_aws_credprov_start(p), 0);
    assert_int_equal(tg_aws_credprov_start(p), TG_EINVAL);
    assert_int_equal(tg_aws_credprov_wait(p, 5000, err, sizeof(err)), 0);
    tg_aws_creds_t *a = tg_aws_credprov_get(p), *b = tg_aws_credprov_get(p);
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_string_equal(a->access_key_id, "AKIDSTATIC");
    assert_string_equal(a->source, "static");
    assert_int_equal(a->refs, 3); /* the provider's and two */
    tg_aws_creds_release(b);
    assert_int_equal(a->refs, 2);
    /* Destroy while a reference is held: it stays valid. */
    uint64_t t0 = tg_now_ns();
    tg_aws_credprov_destroy(p);
    assert_true(tg_now_ns() - t0 < 500000000ULL);
    assert_int_equal(a->refs, 1);
    assert_string_equal(a->secret_access_key, "s");
    tg_aws_creds_release(a);
}

static void test_provider_wait_error(void **state)
{
    tg_aws_creds_opts_t o = {0};
    tg_aws_credprov_t *p;
    char err[1024];
    assert_int_equal(tg_aws_credprov_create(&p, &o), 0);
    assert_int_equal(tg_aws_credprov_start(p), 0);
    assert_int_equal(tg_aws_credprov_wait(p, 5000, err, sizeof(err)), TG_EAUTH);
    assert_non_null(strstr(err, "no AWS credentials found"));
    assert_null(tg_aws_credprov_get(p));
    tg_aws_credprov_destroy(p);
}

static int64_t until(int64_t deadline_ms, tg_aws_credprov_t *p, const char *not_id)
{
    while (tg_wall_ms() < deadline_ms) {
        tg_aws_creds_t *c = tg_aws_credprov_get(p);
        int changed = c && strcmp(c->access_key_id, not_id) != 0;
        tg_aws_creds_release(c);
        if (changed) return tg_wall_ms();
        usleep(5000);
    }
    return 0;
}

static void test_provider_refresh(void **state)
{
    fake_t f;
    fake_start(&f, container_fn);
    f.lifetime_ms = 1500;
    char ep[64], err[512];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f.port);
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/creds", 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer tok-123", 1);
    tg_aws_creds_opts_t o = {.container_endpoint = ep, .refresh_before_ms = 500};
    tg_aws_credprov_t *p;
    assert_int_equal(tg_aws_credprov_create(&p, &o), 0);
    assert_int_equal(tg_aws_credprov_start(p), 0);
    assert_int_equal(tg_aws_credprov_wait(p, 5000, err, sizeof(err)), 0);
    tg_aws_creds_t *first = tg_aws_credprov_get(p);
    assert_string_equal(first->access_key_id, "ASIA0001");
    int64_t exp1 = first->expires_ms;

    /* Refreshed ahead of expiry, twice, and never handing out expired ones. */
    int64_t t = until(tg_wall_ms() + 3000, p, "ASIA0001");
    assert_true(t > 0 && t < exp1);
    t = until(tg_wall_ms() + 3000, p, "ASIA0002");
    assert_true(t > 0);
    /* The old reference is still ours to read. */
    assert_string_equal(first->secret_access_key, "secret1");
    tg_aws_creds_release(first);

    /* Failing: the current credentials stay until they expire, then none. */
    atomic_store(&f.fail, 1);
    tg_aws_creds_t *c = tg_aws_credprov_get(p);
    assert_non_null(c);
    int64_t exp = c->expires_ms;
    tg_aws_creds_release(c);
    while (tg_wall_ms() < exp - 50) {
        int64_t before = tg_wall_ms(); /* taken first: no race with a slow thread */
        c = tg_aws_credprov_get(p);
        if (!c) break; /* already expired: checked below */
        assert_true(c->expires_ms > before);
        tg_aws_creds_release(c);
        usleep(10000);
    }
    while (tg_wall_ms() <= exp)
        usleep(5000);
    assert_null(tg_aws_credprov_get(p));
    assert_int_equal(tg_aws_credprov_wait(p, 10, err, sizeof(err)), TG_EUPSTREAM);
    assert_non_null(strstr(err, "container: GET"));
    assert_non_null(strstr(err, "HTTP 500 Boom: down"));
    int hits = atomic_load(&f.hits);

    /* Retried with backoff (1 s, 2 s, 4 s): a few attempts, not a storm.
     * The window is wide so a loaded machine (ASan in CI) cannot flake it. */
    usleep(2500000);
    int more = atomic_load(&f.hits) - hits;
    assert_true(more >= 1 && more <= 3);

    /* Recovers, at the next attempt: up to one backoff step away (4 s, or 8 s
     * on a machine slow enough that one more failure fit in the window). */
    atomic_store(&f.fail, 0);
    int64_t deadline = tg_wall_ms() + 10000;
    while (!(c = tg_aws_credprov_get(p)) && tg_wall_ms() < deadline)
        usleep(10000);
    assert_non_null(c);
    tg_aws_creds_release(c);

    /* Destroy interrupts a fetch that hangs, promptly. */
    atomic_store(&f.hang, 1);
    hits = atomic_load(&f.hits);
    deadline = tg_wall_ms() + 3000;
    while (atomic_load(&f.hits) == hits && tg_wall_ms() < deadline)
        usleep(5000);
    assert_int_not_equal(atomic_load(&f.hits), hits);
    uint64_t t0 = tg_now_ns();
    tg_aws_credprov_destroy(p);
    /* Well under the 2 s fetch timeout it would otherwise wait out. */
    assert_true(tg_now_ns() - t0 < 1000000000ULL);
    atomic_store(&f.hang, 0);
    fake_stop(&f);
}

/* Many readers take and drop references while the thread swaps them. */
typedef struct {
    tg_aws_credprov_t *p;
    atomic_int *stop;
    long gets;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    while (!atomic_load(r->stop)) {
        tg_aws_creds_t *c = tg_aws_credprov_get(r->p);
        if (c) {
            assert_true(strncmp(c->access_key_id, "ASIA", 4) == 0);
            assert_true(strncmp(c->secret_access_key, "secret", 6) == 0);
            r->gets++;
        }
        tg_aws_creds_release(c);
    }
    return NULL;
}

static void test_provider_concurrent_readers(void **state)
{
    fake_t f;
    fake_start(&f, container_fn);
    f.lifetime_ms = 600;
    char ep[64], err[512];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", f.port);
    setenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/creds", 1);
    setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer tok-123", 1);
    tg_aws_creds_opts_t o = {.container_endpoint = ep, .refresh_before_ms = 300};
    tg_aws_credprov_t *p;
    assert_int_equal(tg_aws_credprov_create(&p, &o), 0);
    assert_int_equal(tg_aws_credprov_start(p), 0);
    assert_int_equal(tg_aws_credprov_wait(p, 5000, err, sizeof(err)), 0);
    atomic_int stop = 0;
    reader_t rs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        rs[i] = (reader_t){p, &stop, 0};
        pthread_create(&th[i], NULL, reader_main, &rs[i]);
    }
    usleep(1500000);
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(rs[i].gets > 0);
    }
    assert_true(atomic_load(&f.serial) >= 3);
    tg_aws_credprov_destroy(p);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_env_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_static_opts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files_profiles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files_aws_profile_and_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files_home_and_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files_role_errors, setup, teardown),
        cmocka_unit_test(test_ini_edges),
        cmocka_unit_test(test_iso8601),
        cmocka_unit_test(test_refresh_schedule),
        cmocka_unit_test(test_parse_sts),
        cmocka_unit_test(test_parse_json),
        cmocka_unit_test_setup_teardown(test_container_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_imds_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_web_identity_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_assume_role_on_top, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_static, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_wait_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_provider_concurrent_readers, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
