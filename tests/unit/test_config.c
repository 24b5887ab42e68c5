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
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_listen_override),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
