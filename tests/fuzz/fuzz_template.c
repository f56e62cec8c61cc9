// fuzz_template: libFuzzer harness for the Jinja parser and renderer (engine/template/) under
// render limits. The input is a template source, optionally followed by a NUL byte and a JSON
// object of variables (else a chat context with every kind of message and a tool). Checked: a
// parse error or a render failure comes with a message and a known code, and a rendering stays
// within max_output. Seeds: tests/data/chat_templates*/ (scripts/run-fuzz.sh).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/common.h"
#include "engine/template/template.h"
#include "tests/fuzz/fuzz.h"

static cJSON *default_vars;

static const char MESSAGES[] =
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi \\u00e9 <b>\"},"
    "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
    "\"function\":{\"name\":\"f\",\"arguments\":{\"x\":1.5,\"y\":[true,null]}}}]},"
    "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"42\"},{\"role\":\"user\",\"content\":\"ok\"}]";
static const char TOOLS[] = "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\","
                            "\"parameters\":{\"type\":\"object\",\"properties\":{\"x\":{\"type\":\"number\"}}}}}]";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fz_quiet();
    cJSON *msgs = tmpl_json_parse(MESSAGES, sizeof MESSAGES - 1, NULL, false);
    cJSON *tools = tmpl_json_parse(TOOLS, sizeof TOOLS - 1, NULL, false);
    CHECK(msgs && tools, "the default context does not parse");
    default_vars = tmpl_context_build(msgs, tools, NULL, true, "<s>", "</s>", NULL);
    cJSON_Delete(msgs);
    cJSON_Delete(tools);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *sep = memchr(data, 0, size);
    size_t src_len = sep ? (size_t)(sep - data) : size;
    char *src = fz_strdup(data, src_len);
    ChatTemplate *t = NULL;
    char err[ERR_MAX];
    err[0] = 0;
    if (tmpl_parse(&t, src, src_len, err) != SL_OK) {
        CHECK(!t && err[0], "a parse error without a message");
        free(src);
        return 0;
    }
    cJSON *vars = NULL;
    if (sep) {
        char *json = fz_strdup(sep + 1, size - src_len - 1);
        vars = tmpl_json_parse(json, size - src_len - 1, NULL, false);
        free(json);
        if (vars && !cJSON_IsObject(vars)) cJSON_Delete(vars), vars = NULL;
    }
    // small limits keep one input quick; each is hit by some input soon enough
    TmplLimits lim = {.max_output = 1 << 16, .max_memory = 8 << 20, .max_steps = 200000, .max_depth = 40,
                      .now = 1700000000};
    char *out = NULL;
    size_t len = 0;
    err[0] = 0;
    int rc = tmpl_render(t, vars ? vars : default_vars, &lim, &out, &len, err);
    if (rc == SL_OK) {
        CHECK(out && len <= lim.max_output && out[len] == 0, "a rendering of %zu bytes", len);
    } else {
        CHECK(rc == TMPL_ERR_RENDER || rc == TMPL_ERR_RAISED || rc == TMPL_ERR_LIMIT, "render code %d", rc);
        CHECK(!out && (err[0] || rc == TMPL_ERR_RAISED), "a render error without a message");
    }
    free(out);
    cJSON_Delete(vars);
    tmpl_free(t);
    free(src);
    return 0;
}
