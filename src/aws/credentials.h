/* credentials.h - AWS credentials from the SDKs' default chain, kept fresh.
 *
 * The chain, in order, first link that yields credentials wins:
 *   1. environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
 *      (skipped when the options name a profile, as the SDKs skip it for an
 *      explicit profile)
 *   2. shared files: AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) then
 *      AWS_CONFIG_FILE (~/.aws/config, "[profile NAME]" sections), profile from
 *      the options, else AWS_PROFILE, else "default". A key in the credentials
 *      file beats the same key in the config file. A profile with role_arn
 *      assumes that role with the credentials of its source_profile (or of its
 *      credential_source: Environment, Ec2InstanceMetadata, EcsContainer), or
 *      through web identity when it has web_identity_token_file. A profile
 *      named explicitly that exists in neither file is an error.
 *   3. web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN
 *      (+ AWS_ROLE_SESSION_NAME) through STS AssumeRoleWithWebIdentity
 *   4. container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (on 169.254.170.2) or
 *      _FULL_URI, with AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE) sent as
 *      Authorization
 *   5. EC2 instance metadata, IMDSv2: PUT /latest/api/token, then
 *      GET /latest/meta-data/iam/security-credentials/[ROLE]
 *      (skipped when AWS_EC2_METADATA_DISABLED=true)
 * Then, when the options name a role, the chain's credentials assume it
 * through STS AssumeRole (signed with SigV4).
 *
 * A link that is not configured passes to the next; a link that is configured
 * but fails (an unreachable STS, a partial profile, a refused token) stops the
 * chain with its error, as in the SDKs: a broken identity must not silently
 * fall through to another one.
 *
 * A provider owns one background thread ("tg-aws-creds") that resolves and
 * refreshes; requests never wait on it. tg_aws_credprov_get() returns the
 * current immutable credentials with a reference held, without blocking on
 * I/O. Temporary credentials are refreshed ahead of expiry (refresh_before_ms,
 * or at half their remaining life when that is shorter); a failed refresh is
 * retried with backoff while the old credentials stay in use until they
 * expire. Secrets are never logged. */
#ifndef TG_AWS_CREDENTIALS_H
#define TG_AWS_CREDENTIALS_H

#include <stddef.h>
#include <stdint.h>

typedef struct tg_aws_creds {
    char *access_key_id;
    char *secret_access_key;
    char *session_token; /* NULL when none */
    int64_t expires_ms;  /* unix ms; 0 = does not expire */
    const char *source;  /* "environment", "shared-files", "web-identity", "container", "imds",
                            "assume-role", "static" */
    /* private */
    int refs;
} tg_aws_creds_t;

typedef struct {
    const char *profile;           /* NULL: AWS_PROFILE, else "default" */
    const char *role_arn;          /* optional role assumed on top of the chain */
    const char *role_session_name; /* default "tollgate-<unix seconds>" */
    const char *external_id;       /* optional, for role_arn */
    const char *region;            /* for STS; default AWS_REGION, AWS_DEFAULT_REGION, us-east-1 */
    /* Endpoint overrides ("http://127.0.0.1:9001"); NULL = AWS's defaults:
     * https://sts.<region>.amazonaws.com (or AWS_ENDPOINT_URL_STS),
     * http://169.254.169.254 (or AWS_EC2_METADATA_SERVICE_ENDPOINT),
     * http://169.254.170.2. */
    const char *sts_endpoint;
    const char *imds_endpoint;
    const char *container_endpoint;
    uint32_t timeout_ms;        /* per HTTP fetch; default 2000 */
    uint32_t refresh_before_ms; /* default 300000 (5 minutes) */
    /* Static credentials (tests, or config that names env vars itself); when
     * access_key_id is set the chain is not consulted. */
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token;
} tg_aws_creds_opts_t;

typedef struct tg_aws_credprov tg_aws_credprov_t;

/* Copies what it needs from o. Does no I/O. */
int tg_aws_credprov_create(tg_aws_credprov_t **out, const tg_aws_creds_opts_t *o);
/* Starts the refresh thread, which resolves at once. */
int tg_aws_credprov_start(tg_aws_credprov_t *p);
/* Waits up to timeout_ms for the first resolution. Returns 0 when credentials
 * are available, else the last error with a message in err (which link was
 * tried and why it failed, never a secret). */
int tg_aws_credprov_wait(tg_aws_credprov_t *p, uint32_t timeout_ms, char *err, size_t errcap);
/* The current credentials with a reference held, or NULL when none are
 * available (not yet resolved, or expired and not refreshed). Never blocks on
 * I/O. Release with tg_aws_creds_release. */
tg_aws_creds_t *tg_aws_credprov_get(tg_aws_credprov_t *p);
void tg_aws_creds_release(tg_aws_creds_t *c);
/* Stops the thread and frees; outstanding references stay valid. */
void tg_aws_credprov_destroy(tg_aws_credprov_t *p);

/* Resolves the chain once, synchronously (the CLI and tests). */
int tg_aws_creds_resolve(const tg_aws_creds_opts_t *o, tg_aws_creds_t **out, char *err,
                         size_t errcap);

/* ---- internals, exposed for the unit tests -------------------------------
 *
 * Looks key up (ASCII case-insensitive) in profile's section of an ini text:
 * "[NAME]" in a credentials file, "[profile NAME]" (or "[default]") in a config
 * file (config_file != 0). Whole-line comments start with '#' or ';'; a value's
 * comment starts at " #" or " ;"; indented lines after a property continue it
 * and are ignored. The last occurrence wins. Returns 0 with the trimmed value
 * in out, TG_ENOTFOUND, or TG_ETOOBIG when it does not fit. *section_found (may
 * be NULL) says whether the profile's section exists. */
int tg_aws_ini_get(const char *text, const char *profile, int config_file, const char *key,
                   char *out, size_t cap, int *section_found);
/* Parses ISO 8601 date-times as AWS writes them (2024-05-01T12:00:00Z, with
 * optional fractional seconds and a Z or +-HH:MM zone) into unix ms. */
int tg_aws_parse_iso8601(const char *s, int64_t *out_ms);
/* When to refresh credentials resolved at now_ms that expire at expires_ms:
 * refresh_before_ms ahead of expiry, or at half the remaining life when that
 * comes later, and never sooner than TG_AWS_REFRESH_MIN_MS from now (but not
 * after expiry). 0 when expires_ms is 0 (never). */
#define TG_AWS_REFRESH_MIN_MS 250
int64_t tg_aws_refresh_at(int64_t now_ms, int64_t expires_ms, uint32_t refresh_before_ms);
/* The delay before retrying a failed refresh: 1 s, doubling up to 30 s. */
uint32_t tg_aws_retry_delay(uint32_t prev_ms);
/* Parses an STS AssumeRole / AssumeRoleWithWebIdentity response (or its
 * ErrorResponse, into err with code and message: TG_EAUTH). *out has one
 * reference; source must be a static string. */
int tg_aws_parse_sts_xml(const char *xml, size_t n, const char *source, tg_aws_creds_t **out,
                         char *err, size_t errcap);
/* Parses the JSON of the container endpoint or of IMDS (AccessKeyId,
 * SecretAccessKey, Token, Expiration; IMDS's Code must be "Success"). */
int tg_aws_parse_creds_json(const char *json, size_t n, const char *source, tg_aws_creds_t **out,
                            char *err, size_t errcap);

#endif
