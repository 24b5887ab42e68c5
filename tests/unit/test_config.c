/* test_config.c - configuration parsing: defaults, every validation error
 * names its field, secrets come from the environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

static char path[64];

static int load(const char *json, tg_config_t **out, char *err, size_t cap)
{
    snprintf(path, sizeof(path), "/tmp/tg-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    int rc = tg_config_load(out, path, err, cap);
    unlink(path);
    return rc;
}

static void expect_error(const char *json, const char *fragment)
{
    tg_config_t *c = NULL;
    char err[512] = "";
    assert_int_equal(load(json, &c, err, sizeof(err)), TG_ECONFIG);
    assert_null(c);
    if (!strstr(err, fragment)) fail_msg("error '%s' lacks '%s'", err, fragment);
}

static void test_defaults(void **state)
{
    tg_config_t *c;
    char err[256];
    assert_int_equal(load("{}", &c, err, sizeof(err)), 0);
    assert_string_equal(c->http.host, "127.0.0.1");
    assert_int_equal(c->http.port, 8080);
    assert_int_equal(c->http.max_body_bytes, 10 << 20);
    assert_string_equal(c->store.path, "var/tollgate.db");
    assert_int_equal(c->nmodels, 0);
    tg_config_free(c);
}

static void test_full(void **state)
{
    setenv("TG_TEST_UPSTREAM_KEY", "sk-secret", 1);
    tg_config_t *c;
    char err[256];
    int rc = load(
        "{\"listen\":\"[::1]:9000\",\"workers\":3,\"store\":{\"path\":\"/tmp/x.db\","
        "\"synchronous\":\"full\"},\"http\":{\"max_body_bytes\":1000},"
        "\"providers\":[{\"name\":\"p\",\"type\":\"openai\",\"base_url\":"
        "\"http://127.0.0.1:1/v1/\",\"api_key_env\":\"TG_TEST_UPSTREAM_KEY\","
        "\"first_byte_timeout_ms\":7}],\"models\":[{\"id\":\"m\",\"provider\":\"p\","
        "\"upstream_model\":\"up\",\"total_timeout_ms\":9},{\"id\":\"n\",\"provider\":\"p\"}]}",
        &c, err, sizeof(err));
    if (rc) fail_msg("%s", err);
    assert_string_equal(c->http.host, "::1");
    assert_int_equal(c->http.port, 9000);
    assert_int_equal(c->http.workers, 3);
    assert_int_equal(c->store.synchronous_full, 1);
    assert_int_equal(c->http.max_body_bytes, 1000);
    assert_string_equal(c->providers[0].base_url, "http://127.0.0.1:1/v1");
    assert_string_equal(c->providers[0].api_key, "sk-secret");
    const tg_model_route_t *m = tg_config_model(c, "m", 1);
    assert_non_null(m);
    assert_string_equal(m->upstream_model, "up");
    assert_int_equal(m->first_byte_timeout_ms, 7);
    assert_int_equal(m->total_timeout_ms, 9);
    assert_string_equal(tg_config_model(c, "n", 1)->upstream_model, "n");
    assert_null(tg_config_model(c, "x", 1));
    tg_config_free(c);
}

static void test_errors(void **state)
{
    expect_error("{", "invalid JSON");
    expect_error("[]", "config: must be an object");
    expect_error("{\"listn\":\"x\"}", "config.listn: unknown field");
    expect_error("{\"listen\":\"nohost\"}", "listen: must be HOST:PORT");
    expect_error("{\"listen\":\"h:99999\"}", "listen: port must be");
    expect_error("{\"http\":{\"max_body_bytes\":-1}}", "http.max_body_bytes: must be between");
    expect_error("{\"http\":{\"max_body_bytes\":1.5}}", "http.max_body_bytes: must be an integer");
    expect_error("{\"store\":{\"driver\":\"mysql\"}}", "store.driver");
    expect_error("{\"providers\":[{\"name\":\"p\",\"type\":\"openai\"}]}",
                 "providers[0].base_url: is required");
    expect_error("{\"providers\":[{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"ftp://x\"}]}",
                 "providers[0].base_url: must start with");
    expect_error("{\"providers\":[{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"http://x\"},"
                 "{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"http://y\"}]}",
                 "providers[1].name: duplicate");
    expect_error("{\"models\":[{\"id\":\"m\",\"provider\":\"nope\"}]}",
                 "models[0].provider: names no provider");
    expect_error(
        "{\"providers\":[{\"name\":\"p\",\"type\":\"openai\",\"base_url\":\"http://x\"}],"
        "\"models\":[{\"id\":\"m\",\"provider\":\"p\"},{\"id\":\"m\",\"provider\":\"p\"}]}",
        "models[1].id: duplicate");
    expect_error("{\"log_level\":\"loud\"}", "log_level");
    expect_error("{\"access_log\":1}", "config.access_log: must be true or false");
}

static void test_aws(void **state)
{
    unsetenv("AWS_BEARER_TOKEN_BEDROCK");
    setenv("TG_TEST_AK", "AKIDX", 1);
    setenv("TG_TEST_SK", "secret", 1);
    tg_config_t *c;
    char err[512];
    int rc = load(
        "{\"providers\":[{\"name\":\"br\",\"type\":\"bedrock\",\"region\":\"us-west-2\","
        "\"credentials\":{\"access_key_id_env\":\"TG_TEST_AK\",\"secret_access_key_env\":"
        "\"TG_TEST_SK\",\"role_arn\":\"arn:aws:iam::1:role/r\",\"sts_endpoint\":\"http://s/\"},"
        "\"catalog\":{\"expose\":true,\"refresh_s\":60}},"
        "{\"name\":\"sm\",\"type\":\"sagemaker\",\"region\":\"eu-west-1\",\"endpoint\":"
        "\"http://127.0.0.1:9000/\",\"endpoints\":\"{'Mixtral 8x7B': 'Mixtral-SM-Endpoint'}\"}],"
        "\"models\":[{\"id\":\"c\",\"provider\":\"br\",\"upstream_model\":"
        "\"us.anthropic.claude-3-5-sonnet-20240620-v1:0\",\"region\":\"us-east-1\"},"
        "{\"id\":\"t\",\"provider\":\"sm\",\"endpoint\":\"tgi-1\",\"format\":\"tgi\","
        "\"custom_attributes\":\"a=1\",\"target_variant\":\"v\",\"inference_component\":\"ic\"}]}",
        &c, err, sizeof(err));
    if (rc) fail_msg("%s", err);
    const tg_provider_t *br = &c->providers[0], *sm = &c->providers[1];
    assert_int_equal(br->kind, TG_PROVIDER_BEDROCK);
    assert_int_equal(br->auth, TG_AWS_AUTH_SIGV4);
    assert_string_equal(br->endpoint, "https://bedrock-runtime.us-west-2.amazonaws.com");
    assert_string_equal(br->control_endpoint, "https://bedrock.us-west-2.amazonaws.com");
    assert_string_equal(br->creds.access_key_id, "AKIDX");
    assert_string_equal(br->creds.sts_endpoint, "http://s");
    assert_int_equal(br->catalog_expose, 1);
    assert_int_equal(br->catalog_refresh_s, 60);
    assert_string_equal(sm->endpoint, "http://127.0.0.1:9000");
    /* A route's own region changes the default host and the signing region. */
    const tg_model_route_t *m = tg_config_model(c, "c", 1);
    assert_string_equal(m->base_url, "https://bedrock-runtime.us-east-1.amazonaws.com");
    assert_string_equal(m->host, "bedrock-runtime.us-east-1.amazonaws.com");
    assert_string_equal(m->region, "us-east-1");
    m = tg_config_model(c, "t", 1);
    assert_string_equal(m->upstream_model, "tgi-1");
    assert_int_equal(m->format, TG_SM_FORMAT_TGI);
    assert_string_equal(m->custom_attributes, "a=1");
    assert_string_equal(m->host, "127.0.0.1:9000");
    /* The reference's map, as a Python literal: a route per entry. */
    m = tg_config_model(c, "Mixtral 8x7B", 12);
    assert_non_null(m);
    assert_string_equal(m->upstream_model, "Mixtral-SM-Endpoint");
    assert_ptr_equal(tg_config_sm_endpoint(c, "Mixtral-SM-Endpoint", 19), m);
    assert_int_equal(c->nmodels, 3);
    tg_config_free(c);

    /* A Bedrock API key in the environment makes bearer the default. */
    setenv("AWS_BEARER_TOKEN_BEDROCK", "br-key", 1);
    rc = load("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\",\"region\":\"us-east-1\"}]}",
              &c, err, sizeof(err));
    if (rc) fail_msg("%s", err);
    assert_int_equal(c->providers[0].auth, TG_AWS_AUTH_BEARER);
    assert_string_equal(c->providers[0].bearer_token, "br-key");
    tg_config_free(c);
    unsetenv("AWS_BEARER_TOKEN_BEDROCK");
}

static void test_aws_errors(void **state)
{
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\"}]}",
                 "providers[0].region: is required");
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\",\"region\":\"US East\"}]}",
                 "providers[0].region: must be an AWS region");
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"vertex\"}]}",
                 "providers[0].type: must be");
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\",\"region\":\"us-east-1\","
                 "\"base_url\":\"http://x\"}]}",
                 "providers[0].base_url: unknown field");
    expect_error("{\"providers\":[{\"name\":\"s\",\"type\":\"sagemaker\",\"region\":\"us-east-1\","
                 "\"auth\":\"bearer\"}]}",
                 "providers[0].auth: must be \"sigv4\"");
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\",\"region\":\"us-east-1\","
                 "\"credentials\":{\"access_key_id_env\":\"A\"}}]}",
                 "providers[0].credentials.secret_access_key_env: access_key_id_env and");
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\",\"region\":\"us-east-1\","
                 "\"catalog\":{\"expose\":true,\"refresh_s\":0}}]}",
                 "providers[0].catalog.expose: needs a catalogue");
    expect_error("{\"providers\":[{\"name\":\"s\",\"type\":\"sagemaker\",\"region\":\"us-east-1\","
                 "\"endpoints\":[1]}]}",
                 "providers[0].endpoints: must be an object");
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\",\"region\":\"us-east-1\"}],"
                 "\"models\":[{\"id\":\"m\",\"provider\":\"b\",\"endpoint\":\"e\"}]}",
                 "models[0].endpoint: only for a sagemaker");
    expect_error("{\"providers\":[{\"name\":\"b\",\"type\":\"bedrock\",\"region\":\"us-east-1\"}],"
                 "\"models\":[{\"id\":\"m\",\"provider\":\"b\",\"upstream_model\":\"bad id\"}]}",
                 "models[0].upstream_model: is not a Bedrock model id");
    expect_error(
        "{\"providers\":[{\"name\":\"s\",\"type\":\"sagemaker\",\"region\":\"us-east-1\"}],"
        "\"models\":[{\"id\":\"m\",\"provider\":\"s\",\"format\":\"gguf\"}]}",
        "models[0].format: must be raw");
}

static void test_listen_override(void **state)
{
    tg_config_t *c;
    char err[256];
    assert_int_equal(load("{}", &c, err, sizeof(err)), 0);
    assert_int_equal(tg_config_set_listen(c, "0.0.0.0:0", err, sizeof(err)), 0);
    assert_string_equal(c->http.host, "0.0.0.0");
    assert_int_equal(c->http.port, 0);
    assert_int_equal(tg_config_set_listen(c, "[::1", err, sizeof(err)), TG_ECONFIG);
    tg_config_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),   cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),     cmocka_unit_test(test_aws),
        cmocka_unit_test(test_aws_errors), cmocka_unit_test(test_listen_override),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
