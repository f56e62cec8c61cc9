// test_tool_parse.c: tool-call and reasoning parsers (server/tool_parse.h, server/chat_output.h)
// on a table of real output strings per format: complete, parallel, with leading text, malformed,
// cut off. Each is parsed whole, then streamed cut in two at every byte and byte by byte; the SSE
// deltas are read back as a client would and must add up to the whole message exactly, with each
// call's first delta carrying index, id, type, name and arguments "" and later ones fragments only.
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/common.h"
#include "server/chat_output.h"
#include "tests/unit/test.h"

typedef struct {
    const char *what;
    ToolFormat fmt;
    ReasonFormat reason;
    bool single;
    const char *text;
    const char *content;   // "" = null
    const char *reasoning; // NULL: none
    int n_calls;
    const char *name[3], *args[3];
} Case;

#define GW "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"

static const Case CASES[] = {
    {"hermes one", TOOL_FMT_HERMES, 0, false, "<tool_call>\n" GW "\n</tool_call>", "", NULL, 1,
     {"get_weather"}, {"{\"city\": \"Paris\"}"}},
    {"hermes leading text", TOOL_FMT_HERMES, 0, false,
     "Let me check that.\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>",
     "Let me check that.", NULL, 1, {"get_weather"}, {"{\"city\": \"Paris\", \"unit\": \"c\"}"}},
    {"hermes parallel", TOOL_FMT_HERMES, 0, false,
     "<tool_call>\n" GW "\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", "",
     NULL, 2, {"get_weather", "get_time"}, {"{\"city\": \"Paris\"}", "{}"}},
    {"hermes parallel false", TOOL_FMT_HERMES, 0, true,
     "<tool_call>\n" GW "\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", "",
     NULL, 1, {"get_weather"}, {"{\"city\": \"Paris\"}"}},
    {"hermes unclosed then next", TOOL_FMT_HERMES, 0, false,
     "<tool_call>\n" GW "\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>", "", NULL, 2,
     {"get_weather", "get_time"}, {"{\"city\": \"Paris\"}", "{}"}},
    {"hermes nested", TOOL_FMT_HERMES, 0, false,
     "<tool_call>{\"name\": \"q\", \"parameters\": {\"s\": \"a}b{\\\"\", \"l\": [1, {\"x\": []}]}}</tool_call>", "",
     NULL, 1, {"q"}, {"{\"s\": \"a}b{\\\"\", \"l\": [1, {\"x\": []}]}"}},
    {"hermes text after", TOOL_FMT_HERMES, 0, false, "<tool_call>\n" GW "\n</tool_call>\n\nDone.", "Done.", NULL, 1,
     {"get_weather"}, {"{\"city\": \"Paris\"}"}},
    {"hermes malformed", TOOL_FMT_HERMES, 0, false, "Hi <tool_call>\n{\"city\": \"Paris\"}\n</tool_call>",
     "Hi <tool_call>\n{\"city\": \"Paris\"}\n</tool_call>", NULL, 0, {0}, {0}},
    {"hermes no call", TOOL_FMT_HERMES, 0, false, "The weather is <b>nice</b> today.  ",
     "The weather is <b>nice</b> today.  ", NULL, 0, {0}, {0}},
    {"hermes cut off", TOOL_FMT_HERMES, 0, false, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1", "", NULL,
     1, {"f"}, {"{\"a\": 1"}},
    {"hermes cut in header", TOOL_FMT_HERMES, 0, false, "ok <tool_call>\n{\"name\": \"f", "ok <tool_call>\n{\"name\": \"f",
     NULL, 0, {0}, {0}},
    {"qwen3 think + hermes", TOOL_FMT_HERMES, REASON_QWEN3, false,
     "<think>\nThe user wants the weather.\n</think>\n\n<tool_call>\n" GW "\n</tool_call>", "",
     "\nThe user wants the weather.\n", 1, {"get_weather"}, {"{\"city\": \"Paris\"}"}},
    {"qwen3 no think", TOOL_FMT_NONE, REASON_QWEN3, false, "Just the answer.", "Just the answer.", "", 0, {0}, {0}},
    {"deepseek_r1", TOOL_FMT_NONE, REASON_DEEPSEEK_R1, false, "Let me think: 2+2.</think>\n\nThe answer is 4.",
     "The answer is 4.", "Let me think: 2+2.", 0, {0}, {0}},
    {"deepseek_r1 opening tag", TOOL_FMT_NONE, REASON_DEEPSEEK_R1, false, "<think>hmm</think>4", "4", "hmm", 0, {0},
     {0}},
    {"deepseek_r1 unfinished", TOOL_FMT_NONE, REASON_DEEPSEEK_R1, false, "still thinking </thi", "",
     "still thinking </thi", 0, {0}, {0}},
    {"llama3_json one", TOOL_FMT_LLAMA3_JSON, 0, false,
     "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}", "", NULL, 1, {"get_weather"},
     {"{\"city\": \"Paris\"}"}},
    {"llama3_json python_tag parallel", TOOL_FMT_LLAMA3_JSON, 0, false,
     "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1}}", "", NULL, 2,
     {"a", "b"}, {"{}", "{\"x\": 1}"}},
    {"llama3_json text first", TOOL_FMT_LLAMA3_JSON, 0, false, "Sure! {\"name\": \"a\", \"parameters\": {}}",
     "Sure! {\"name\": \"a\", \"parameters\": {}}", NULL, 0, {0}, {0}},
    {"llama3_json plain json", TOOL_FMT_LLAMA3_JSON, 0, false, " {\"answer\": 42}", " {\"answer\": 42}", NULL, 0, {0},
     {0}},
    {"mistral list", TOOL_FMT_MISTRAL, 0, false,
     "[TOOL_CALLS] [" GW ", {\"name\": \"f\", \"arguments\": {}}]", "", NULL, 2, {"get_weather", "f"},
     {"{\"city\": \"Paris\"}", "{}"}},
    {"mistral args form", TOOL_FMT_MISTRAL, 0, false,
     "Checking.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]f[CALL_ID]a1b2c3d4e[ARGS]{}", "Checking.",
     NULL, 2, {"get_weather", "f"}, {"{\"city\": \"Paris\"}", "{}"}},
    {"mistral malformed", TOOL_FMT_MISTRAL, 0, false, "[TOOL_CALLS] oops", "[TOOL_CALLS] oops", NULL, 0, {0}, {0}},
    {"pythonic one", TOOL_FMT_PYTHONIC, 0, false, "[get_weather(city='Paris', metric=\"celsius\")]", "", NULL, 1,
     {"get_weather"}, {"{\"city\": \"Paris\", \"metric\": \"celsius\"}"}},
    {"pythonic parallel literals", TOOL_FMT_PYTHONIC, 0, false,
     "[a(x=1, y=2.5, z=True, w=None), b(l=[1, 'two'], d={'k': (1, 2)}, n=-3)]", "", NULL, 2, {"a", "b"},
     {"{\"x\": 1, \"y\": 2.5, \"z\": true, \"w\": null}", "{\"l\": [1, \"two\"], \"d\": {\"k\": [1, 2]}, \"n\": -3}"}},
    {"pythonic tags", TOOL_FMT_PYTHONIC, 0, false, "<|python_start|>[f()]<|python_end|>", "", NULL, 1, {"f"}, {"{}"}},
    {"pythonic text", TOOL_FMT_PYTHONIC, 0, false, "[Note] this is text", "[Note] this is text", NULL, 0, {0}, {0}},
    {"pythonic not a literal", TOOL_FMT_PYTHONIC, 0, false, "[f(x=foo)]", "[f(x=foo)]", NULL, 0, {0}, {0}},
    {"required array", TOOL_FMT_JSON_ARRAY, 0, false,
     "[{\"name\":\"get_weather\",\"parameters\":{\"city\":\"Paris\"}},{\"name\":\"t\",\"parameters\":{}}]", "", NULL, 2,
     {"get_weather", "t"}, {"{\"city\":\"Paris\"}", "{}"}},
};

// A client reading the SSE stream: content, reasoning and calls accumulated from the deltas, and
// the role chunk (one, before anything else, content null when a call comes first, else "").
typedef struct {
    SBuf content, reasoning;
    char *name[8], *id[8];
    SBuf args[8];
    int n_calls;
    int roles;
    bool role_null;
    int first; // what came first after the role: 0 nothing, 1 text or reasoning, 2 a call
} Client;

static void client_free(Client *c) {
    sbuf_free(&c->content);
    sbuf_free(&c->reasoning);
    for (int k = 0; k < 8; k++) {
        free(c->name[k]);
        free(c->id[k]);
        sbuf_free(&c->args[k]);
    }
}

// Reads every "data: {...}" event of sse into c; false (with a failure recorded) on a bad delta.
static bool client_read(Client *c, const SBuf *sse, const char *what) {
    const char *p = sse->data ? sse->data : "";
    while ((p = strstr(p, "data: "))) {
        p += 6;
        const char *end = strstr(p, "\n\n");
        cJSON *ev = cJSON_ParseWithLength(p, (size_t)(end - p));
        p = end;
        cJSON *d = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(ev, "choices"), 0), "delta");
        cJSON *v;
        if (cJSON_GetObjectItem(d, "role")) {
            EXPECT(!c->content.len && !c->reasoning.len && !c->n_calls, "%s: role chunk first", what);
            c->roles++;
            c->role_null = cJSON_IsNull(cJSON_GetObjectItem(d, "content"));
            EXPECT(c->role_null || !strcmp(cJSON_GetObjectItem(d, "content")->valuestring, ""), "%s: role", what);
        } else if ((v = cJSON_GetObjectItem(d, "content"))) {
            sbuf_puts(&c->content, v->valuestring);
        }
        if (!c->first && (c->content.len || cJSON_GetObjectItem(d, "reasoning_content"))) c->first = 1;
        if (!c->first && cJSON_GetObjectItem(d, "tool_calls")) c->first = 2;
        if ((v = cJSON_GetObjectItem(d, "reasoning_content"))) sbuf_puts(&c->reasoning, v->valuestring);
        cJSON *tc = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "tool_calls"), 0);
        if (tc) {
            int k = cJSON_GetObjectItem(tc, "index")->valueint;
            cJSON *fn = cJSON_GetObjectItem(tc, "function"), *id = cJSON_GetObjectItem(tc, "id");
            const char *args = cJSON_GetObjectItem(fn, "arguments")->valuestring;
            if (k == c->n_calls) { // a new call: the first delta is whole
                bool ok = id && !strncmp(id->valuestring, "call_", 5) &&
                          !strcmp(cJSON_GetObjectItem(tc, "type")->valuestring, "function") &&
                          cJSON_IsString(cJSON_GetObjectItem(fn, "name")) && !args[0];
                EXPECT(ok, "%s: first delta of call %d", what, k);
                c->name[k] = xstrdup(cJSON_GetObjectItem(fn, "name")->valuestring);
                c->id[k] = xstrdup(id ? id->valuestring : "");
                c->n_calls++;
            } else {
                EXPECT(k == c->n_calls - 1 && !id && !cJSON_GetObjectItem(fn, "name"), "%s: later delta", what);
            }
            sbuf_puts(&c->args[k], args);
        }
        cJSON_Delete(ev);
    }
    return true;
}

static void check_whole(const Case *t, ChatOut *o) {
    RespChoice rc = {0};
    chat_out_view(o, &rc);
    EXPECT(rc.text_len == strlen(t->content) && !memcmp(rc.text, t->content, rc.text_len), "%s: content '%.*s'",
           t->what, (int)rc.text_len, rc.text);
    if (t->reasoning)
        EXPECT(rc.reasoning_len == strlen(t->reasoning) && !memcmp(rc.reasoning ? rc.reasoning : "", t->reasoning, rc.reasoning_len),
               "%s: reasoning '%.*s'", t->what, (int)rc.reasoning_len, rc.reasoning ? rc.reasoning : "");
    EXPECT_EQ_INT(rc.n_calls, t->n_calls);
    for (int k = 0; k < rc.n_calls && k < t->n_calls; k++) {
        EXPECT_STR_EQ(rc.calls[k].name, t->name[k]);
        EXPECT(rc.calls[k].args_len == strlen(t->args[k]) && !memcmp(rc.calls[k].args, t->args[k], rc.calls[k].args_len),
               "%s: args %d '%.*s'", t->what, k, (int)rc.calls[k].args_len, rc.calls[k].args);
    }
}

static ChatOutConfig config(const Case *t) {
    return (ChatOutConfig){.tool_fmt = t->fmt, .single = t->single, .reason_fmt = t->reason};
}

static void test_whole(void) {
    for (size_t i = 0; i < ARRAY_LEN(CASES); i++) {
        ChatOutConfig cc = config(&CASES[i]);
        ChatOut o;
        chat_out_init(&o, &cc);
        chat_out_feed(&o, CASES[i].text, strlen(CASES[i].text), true);
        check_whole(&CASES[i], &o);
        chat_out_free(&o);
    }
}

// Streams t cut at the given points (cuts[0..n) increasing), and compares what a client reads
// with the whole message.
static void stream_once(const Case *t, const size_t *cuts, int n_cuts, const char *what) {
    ChatOutConfig cc = config(t);
    ChatOut o;
    chat_out_init(&o, &cc);
    RespMeta m;
    resp_meta_init(&m, OAI_CHAT, "m", NULL, false);
    SBuf sse = {0};
    size_t len = strlen(t->text), at = 0;
    RespChoice step = {.index = 0, .stop_token = -1};
    for (int k = 0; k <= n_cuts; k++) {
        size_t to = k < n_cuts ? cuts[k] : len;
        chat_out_feed(&o, t->text + at, to - at, k == n_cuts);
        chat_out_stream(&o, &sse, &m, &step);
        at = to;
    }
    Client c = {0};
    client_read(&c, &sse, what);
    RespChoice rc = {0};
    chat_out_view(&o, &rc);
    EXPECT(c.content.len == rc.text_len && !memcmp(c.content.data ? c.content.data : "", rc.text, rc.text_len),
           "%s: streamed content '%s'", what, c.content.data ? c.content.data : "");
    EXPECT(c.reasoning.len == rc.reasoning_len, "%s: streamed reasoning", what);
    EXPECT_EQ_INT(c.roles, 1);
    bool forced = t->fmt == TOOL_FMT_ARGS || t->fmt == TOOL_FMT_JSON_ARRAY; // null even when empty
    EXPECT(c.role_null == (c.first == 2 || (!c.first && forced)), "%s: role content", what);
    EXPECT_EQ_INT(c.n_calls, rc.n_calls);
    for (int k = 0; k < c.n_calls && k < rc.n_calls; k++) {
        EXPECT_STR_EQ(c.name[k], rc.calls[k].name);
        EXPECT_STR_EQ(c.id[k], rc.calls[k].id);
        EXPECT(c.args[k].len == rc.calls[k].args_len && !memcmp(c.args[k].data ? c.args[k].data : "", rc.calls[k].args, rc.calls[k].args_len),
               "%s: streamed args %d '%s'", what, k, c.args[k].data ? c.args[k].data : "");
    }
    check_whole(t, &o); // and the stream's own parse is the whole one
    client_free(&c);
    sbuf_free(&sse);
    chat_out_free(&o);
}

static void test_split_points(void) {
    for (size_t i = 0; i < ARRAY_LEN(CASES); i++) {
        size_t len = strlen(CASES[i].text);
        for (size_t k = 0; k <= len; k++) {
            char what[128];
            snprintf(what, sizeof what, "%s cut at %zu", CASES[i].what, k);
            stream_once(&CASES[i], &k, 1, what);
        }
    }
}

static void test_byte_by_byte(void) {
    for (size_t i = 0; i < ARRAY_LEN(CASES); i++) {
        size_t len = strlen(CASES[i].text);
        size_t *cuts = xmalloc(sizeof(size_t) * (len + 1));
        for (size_t k = 0; k < len; k++) cuts[k] = k + 1;
        stream_once(&CASES[i], cuts, (int)len, CASES[i].what);
        free(cuts);
    }
}

static void test_named(void) {
    ChatOutConfig cc = {.tool_fmt = TOOL_FMT_ARGS, .named = "get_weather"};
    ChatOut o;
    chat_out_init(&o, &cc);
    RespMeta m;
    resp_meta_init(&m, OAI_CHAT, "m", NULL, false);
    SBuf sse = {0};
    RespChoice step = {.index = 0, .stop_token = -1};
    const char *parts[] = {"{\"ci", "ty\":\"Par", "is\"}"};
    for (int k = 0; k < 3; k++) {
        chat_out_feed(&o, parts[k], strlen(parts[k]), k == 2);
        chat_out_stream(&o, &sse, &m, &step);
    }
    Client c = {0};
    client_read(&c, &sse, "named");
    EXPECT_EQ_INT(c.n_calls, 1);
    EXPECT(c.roles == 1 && c.role_null, "named: role chunk with content null");
    EXPECT_STR_EQ(c.name[0], "get_weather");
    EXPECT_STR_EQ(c.args[0].data, "{\"city\":\"Paris\"}");
    EXPECT_STR_EQ(chat_out_finish(&o, "stop"), "stop"); // OpenAI: a named call finishes with "stop"
    client_free(&c);
    sbuf_free(&sse);
    chat_out_free(&o);
    cc = (ChatOutConfig){.tool_fmt = TOOL_FMT_HERMES};
    chat_out_init(&o, &cc);
    chat_out_feed(&o, CASES[0].text, strlen(CASES[0].text), true);
    EXPECT_STR_EQ(chat_out_finish(&o, "stop"), "tool_calls");
    EXPECT_STR_EQ(chat_out_finish(&o, "length"), "length");
    chat_out_free(&o);
}

static void test_names(void) {
    EXPECT_EQ_INT(tool_format_from_name("hermes"), TOOL_FMT_HERMES);
    EXPECT_EQ_INT(tool_format_from_name("pythonic"), TOOL_FMT_PYTHONIC);
    EXPECT_EQ_INT(tool_format_from_name("json_array"), TOOL_FMT_NONE); // internal, not a flag value
    EXPECT_EQ_INT(reason_format_from_name("qwen3"), REASON_QWEN3);
    EXPECT_EQ_INT(reason_format_from_name("r1"), REASON_NONE);
}

int main(void) {
    TEST_RUN(test_whole);
    TEST_RUN(test_split_points);
    TEST_RUN(test_byte_by_byte);
    TEST_RUN(test_named);
    TEST_RUN(test_names);
    return test_summary();
}
