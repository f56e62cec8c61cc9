// test_openai.c: request validation (openai-api.md §7's bad-input table, row by row), valid
// requests parsed into the expected OaiRequest, and response/SSE bytes for a few cases.
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/openai.h"
#include "server/respond.h"
#include "tests/unit/test.h"

static const char *const NAMES[] = {"smol", "org/smol-v2"};
static const OaiLimits LIM = {.vocab = 49152, .max_n = 16, .max_tokens = 0, .model_names = NAMES, .n_model_names = 2};

static int parse(OaiKind kind, const char *body, OaiRequest *r, ApiError *e) {
    // the server's body buffers are NUL-terminated copies; so is this one
    size_t len = strlen(body);
    char *copy = xmalloc(len + 1);
    memcpy(copy, body, len + 1);
    int rc = oai_parse(kind, copy, len, &LIM, r, e);
    free(copy);
    return rc;
}

#define CHAT_MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

typedef struct {
    const char *row;   // §7 row number and case
    OaiKind kind;
    const char *body;
    int status;
    const char *param; // "" = null
    const char *code;  // NULL = any
    const char *words; // a substring the message must contain
} BadCase;

static const BadCase BAD[] = {
    {"1 truncated", OAI_CHAT, "{\"messages\":[", 400, "", NULL, "could not parse the JSON"},
    {"1 garbage", OAI_CHAT, "hello", 400, "", NULL, "could not parse the JSON"},
    {"1 trailing", OAI_CHAT, "{" CHAT_MSGS "} x", 400, "", NULL, "could not parse"},
    {"2 array", OAI_CHAT, "[]", 400, "", NULL, "expected a JSON object"},
    {"2 number", OAI_CHAT, "42", 400, "", NULL, "expected a JSON object"},
    {"2 null", OAI_CHAT, "null", 400, "", NULL, "expected a JSON object"},
    {"3 empty", OAI_CHAT, "", 400, "", NULL, "body is empty"},
    {"5 utf8", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\xff\"}]}", 400, "messages", NULL, "UTF-8"},
    {"5 overlong", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}", 400, "messages", NULL, "UTF-8"},
    {"5 surrogate", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}", 400, "messages", NULL, "surrogate"},
    {"5 low surrogate", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\udc00x\"}]}", 400, "messages", NULL, "surrogate"},
    {"7 missing", OAI_CHAT, "{}", 400, "messages", "missing_required_parameter", "'messages'"},
    {"7 empty", OAI_CHAT, "{\"messages\":[]}", 400, "messages", "empty_array", "empty array"},
    {"7 string", OAI_CHAT, "{\"messages\":\"hi\"}", 400, "messages", "invalid_type", "got a string"},
    {"7 [123]", OAI_CHAT, "{\"messages\":[123]}", 400, "messages", "invalid_type", "messages[0]"},
    {"7 [{}]", OAI_CHAT, "{\"messages\":[{}]}", 400, "messages", "missing_required_parameter", "messages[0].role"},
    {"7 wizard", OAI_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages", NULL, "'wizard'"},
    {"7 role:123", OAI_CHAT, "{\"messages\":[{\"role\":123,\"content\":\"x\"}]}", 400, "messages", NULL, "role"},
    {"7 content:123", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":123}]}", 400, "messages", "invalid_type", "content"},
    {"7 no content", OAI_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages", NULL, "messages[0].content"},
    {"7 tool no id", OAI_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400, "messages", NULL, "tool_call_id"},
    {"7 image part", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"x\"}}]}]}", 400, "messages", NULL, "text only"},
    {"8 max_tokens -1", OAI_CHAT, "{" CHAT_MSGS ",\"max_tokens\":-1}", 400, "max_tokens", "integer_below_min_value", ">= 1"},
    {"8 max_tokens 0", OAI_CHAT, "{" CHAT_MSGS ",\"max_tokens\":0}", 400, "max_tokens", "integer_below_min_value", ">= 1"},
    {"8 max_tokens 1.5", OAI_CHAT, "{" CHAT_MSGS ",\"max_tokens\":1.5}", 400, "max_tokens", "invalid_type", "integer"},
    {"8 max_tokens \"10\"", OAI_CHAT, "{" CHAT_MSGS ",\"max_tokens\":\"10\"}", 400, "max_tokens", "invalid_type", "got a string"},
    {"8 max_tokens 1e30", OAI_CHAT, "{" CHAT_MSGS ",\"max_tokens\":1e30}", 400, "max_tokens", "integer_above_max_value", "maximum"},
    {"8 max_completion_tokens 0", OAI_CHAT, "{" CHAT_MSGS ",\"max_completion_tokens\":0}", 400, "max_completion_tokens", NULL, ">= 1"},
    {"8 completions max_tokens 0", OAI_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0}", 400, "max_tokens", NULL, ">= 1"},
    {"9 n 1000", OAI_CHAT, "{" CHAT_MSGS ",\"n\":1000}", 400, "n", "integer_above_max_value", "<= 16"},
    {"9 n 0", OAI_CHAT, "{" CHAT_MSGS ",\"n\":0}", 400, "n", "integer_below_min_value", ">= 1"},
    {"9 n -1", OAI_CHAT, "{" CHAT_MSGS ",\"n\":-1}", 400, "n", NULL, ">= 1"},
    {"10 temperature -1", OAI_CHAT, "{" CHAT_MSGS ",\"temperature\":-1}", 400, "temperature", "decimal_below_min_value", "minimum"},
    {"10 temperature 3", OAI_CHAT, "{" CHAT_MSGS ",\"temperature\":3}", 400, "temperature", "decimal_above_max_value", "maximum"},
    {"10 temperature 1e999", OAI_CHAT, "{" CHAT_MSGS ",\"temperature\":1e999}", 400, "temperature", NULL, "finite"},
    {"10 top_p 0", OAI_CHAT, "{" CHAT_MSGS ",\"top_p\":0}", 400, "top_p", NULL, "> 0"},
    {"10 top_k -5", OAI_CHAT, "{" CHAT_MSGS ",\"top_k\":-5}", 400, "top_k", NULL, ">= -1"},
    {"10 presence 5", OAI_CHAT, "{" CHAT_MSGS ",\"presence_penalty\":5}", 400, "presence_penalty", NULL, "<= 2"},
    {"10 frequency -5", OAI_CHAT, "{" CHAT_MSGS ",\"frequency_penalty\":-5}", 400, "frequency_penalty", NULL, ">= -2"},
    {"10 repetition 0", OAI_CHAT, "{" CHAT_MSGS ",\"repetition_penalty\":0}", 400, "repetition_penalty", NULL, "> 0"},
    {"10 min_p 2", OAI_CHAT, "{" CHAT_MSGS ",\"min_p\":2}", 400, "min_p", NULL, "<= 1"},
    {"11 top_logprobs 21", OAI_CHAT, "{" CHAT_MSGS ",\"logprobs\":true,\"top_logprobs\":21}", 400, "top_logprobs", NULL, "<= 20"},
    {"11 top_logprobs alone", OAI_CHAT, "{" CHAT_MSGS ",\"top_logprobs\":2}", 400, "top_logprobs", NULL, "logprobs"},
    {"11 completions logprobs 21", OAI_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":21}", 400, "logprobs", NULL, "<= 20"},
    {"12 stop 5", OAI_CHAT, "{" CHAT_MSGS ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop", NULL, "maximum length 4"},
    {"12 stop non-string", OAI_CHAT, "{" CHAT_MSGS ",\"stop\":[\"a\",1]}", 400, "stop", NULL, "string"},
    {"12 stop number", OAI_CHAT, "{" CHAT_MSGS ",\"stop\":7}", 400, "stop", NULL, "string"},
    {"12 logit_bias abc", OAI_CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"abc\":1}}", 400, "logit_bias", NULL, "'abc'"},
    {"12 logit_bias oov", OAI_CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"999999\":1}}", 400, "logit_bias", NULL, "999999"},
    {"12 logit_bias 500", OAI_CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"5\":500}}", 400, "logit_bias", NULL, "between -100 and 100"},
    {"12 logit_bias string", OAI_CHAT, "{" CHAT_MSGS ",\"logit_bias\":{\"5\":\"x\"}}", 400, "logit_bias", NULL, "token 5"},
    {"14 unknown model", OAI_CHAT, "{\"model\":\"gpt-9\"," CHAT_MSGS "}", 404, "model", "model_not_found", "`gpt-9` does not exist"},
    {"15 stream_options", OAI_CHAT, "{" CHAT_MSGS ",\"stream_options\":{\"include_usage\":true}}", 400, "stream_options", NULL, "stream"},
    {"15 tool_choice name", OAI_CHAT, "{" CHAT_MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                                     "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", 400, "tool_choice", NULL, "'g'"},
    {"15 tools []", OAI_CHAT, "{" CHAT_MSGS ",\"tools\":[]}", 400, "tools", NULL, "empty array"},
    {"15 bad tool", OAI_CHAT, "{" CHAT_MSGS ",\"tools\":[{\"type\":\"function\"}]}", 400, "tools", NULL, "tools[0]"},
    {"15 response_format sound", OAI_CHAT, "{" CHAT_MSGS ",\"response_format\":{\"type\":\"sound\"}}", 400, "response_format", NULL, "'sound'"},
    {"15 json_schema missing", OAI_CHAT, "{" CHAT_MSGS ",\"response_format\":{\"type\":\"json_schema\"}}", 400, "response_format", NULL, "json_schema"},
    {"16 prompt \"\"", OAI_COMPLETION, "{\"prompt\":\"\"}", 400, "prompt", NULL, "empty"},
    {"16 prompt []", OAI_COMPLETION, "{\"prompt\":[]}", 400, "prompt", NULL, "empty"},
    {"16 prompt [999999]", OAI_COMPLETION, "{\"prompt\":[999999]}", 400, "prompt", NULL, "out of vocabulary"},
    {"16 prompt [-1]", OAI_COMPLETION, "{\"prompt\":[-1]}", 400, "prompt", NULL, "out of vocabulary"},
    {"16 prompt [[]]", OAI_COMPLETION, "{\"prompt\":[[]]}", 400, "prompt", NULL, "empty"},
    {"16 prompt mixed", OAI_COMPLETION, "{\"prompt\":[\"a\",[1]]}", 400, "prompt", NULL, "prompt[1]"},
    {"16 prompt missing", OAI_COMPLETION, "{\"max_tokens\":3}", 400, "prompt", "missing_required_parameter", "'prompt'"},
    {"17 \\u0000", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", 400, "messages", NULL, "NUL"},
    {"17 raw control", OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\x01\"}]}", 400, "messages", NULL, "control"},
    {"x min_tokens > max", OAI_CHAT, "{" CHAT_MSGS ",\"max_tokens\":2,\"min_tokens\":3}", 400, "min_tokens", NULL, "more than"},
    {"x best_of", OAI_COMPLETION, "{\"prompt\":\"x\",\"best_of\":3}", 400, "best_of", NULL, "best_of"},
    {"x suffix", OAI_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"y\"}", 400, "suffix", "unsupported_parameter", "not supported"},
    {"x guided_json", OAI_CHAT, "{" CHAT_MSGS ",\"guided_json\":5}", 400, "guided_json", NULL, "JSON schema"},
    {"x guided_choice", OAI_CHAT, "{" CHAT_MSGS ",\"guided_choice\":[\"a\",1]}", 400, "guided_choice", NULL, "strings"},
    {"x two constraints", OAI_CHAT, "{" CHAT_MSGS ",\"response_format\":{\"type\":\"json_object\"},\"grammar\":\"root ::= \\\"a\\\"\"}", 400, "grammar", NULL, "Only one"},
    {"x stream not bool", OAI_CHAT, "{" CHAT_MSGS ",\"stream\":1}", 400, "stream", "invalid_type", "boolean"},
    {"x seed 1.5", OAI_CHAT, "{" CHAT_MSGS ",\"seed\":1.5}", 400, "seed", NULL, "integer"},
    {"x model number", OAI_CHAT, "{\"model\":5," CHAT_MSGS "}", 400, "model", NULL, "string"},
    {"x stop_token_ids oov", OAI_CHAT, "{" CHAT_MSGS ",\"stop_token_ids\":[49152]}", 400, "stop_token_ids", NULL, "vocabulary"},
    {"x both prompts", OAI_CHAT, "{" CHAT_MSGS ",\"continue_final_message\":true}", 400, "continue_final_message", NULL, "both"},
    {"x prompt_logprobs 21", OAI_COMPLETION, "{\"prompt\":\"x\",\"prompt_logprobs\":21}", 400, "prompt_logprobs", NULL, "<= 20"},
    {"x echo logprobs stream", OAI_COMPLETION, "{\"prompt\":\"x\",\"echo\":true,\"logprobs\":1,\"stream\":true}", 400, "echo", NULL, "stream"},
};

static void test_bad_inputs(void) {
    for (size_t i = 0; i < ARRAY_LEN(BAD); i++) {
        const BadCase *c = &BAD[i];
        OaiRequest r;
        ApiError e = {0};
        int rc = parse(c->kind, c->body, &r, &e);
        EXPECT(rc == SL_ERR, "row %s: accepted", c->row);
        if (rc != SL_ERR) {
            oai_request_free(&r);
            continue;
        }
        EXPECT(e.status == c->status, "row %s: status %d", c->row, e.status);
        EXPECT(!strcmp(e.param, c->param), "row %s: param '%s', expected '%s'", c->row, e.param, c->param);
        EXPECT(!c->code || (e.code && !strcmp(e.code, c->code)), "row %s: code %s", c->row, e.code ? e.code : "null");
        EXPECT(strstr(e.message, c->words) != NULL, "row %s: message \"%s\" lacks \"%s\"", c->row, e.message, c->words);
        EXPECT(!strcmp(e.type, "invalid_request_error"), "row %s: type %s", c->row, e.type);
        EXPECT(r.messages == NULL && r.model == NULL, "row %s: request not zeroed", c->row);
    }
}

// Row 6: 100k nested '[' is a 400, with no deep recursion.
static void test_deep_nesting(void) {
    size_t n = 100000;
    char *body = xmalloc(n + 64);
    strcpy(body, "{\"messages\":");
    memset(body + strlen(body), '[', n);
    body[12 + n] = 0;
    OaiRequest r;
    ApiError e = {0};
    EXPECT(oai_parse(OAI_CHAT, body, strlen(body), &LIM, &r, &e) == SL_ERR);
    EXPECT_EQ_INT(e.status, 400);
    EXPECT(strstr(e.message, "could not parse") != NULL, "%s", e.message);
    free(body);
}

// Row 13: the context check once the prompt is tokenized.
static void test_context(void) {
    OaiRequest r;
    ApiError e = {0};
    ASSERT(parse(OAI_CHAT, "{" CHAT_MSGS ",\"max_tokens\":100}", &r, &e) == SL_OK);
    int max_out = 0;
    EXPECT(oai_check_context(&r, 1000, 2048, 0, &max_out, &e) == SL_OK);
    EXPECT_EQ_INT(max_out, 100);
    EXPECT(oai_check_context(&r, 2000, 2048, 0, &max_out, &e) == SL_ERR);
    EXPECT_EQ_INT(e.status, 400);
    EXPECT_STR_EQ(e.code, "context_length_exceeded");
    EXPECT_STR_EQ(e.param, "messages");
    EXPECT(strstr(e.message, "maximum context length is 2048 tokens") && strstr(e.message, "2100"), "%s", e.message);
    EXPECT(oai_check_context(&r, 2048, 2048, 0, &max_out, &e) == SL_ERR);
    oai_request_free(&r);
    // no max_tokens: chat gets what the context leaves, completions 16 at most
    ASSERT(parse(OAI_CHAT, "{" CHAT_MSGS "}", &r, &e) == SL_OK);
    EXPECT(oai_check_context(&r, 48, 2048, 0, &max_out, &e) == SL_OK);
    EXPECT_EQ_INT(max_out, 2000);
    oai_request_free(&r);
    ASSERT(parse(OAI_COMPLETION, "{\"prompt\":\"x\"}", &r, &e) == SL_OK);
    EXPECT(oai_check_context(&r, 48, 2048, 0, &max_out, &e) == SL_OK);
    EXPECT_EQ_INT(max_out, 16);
    EXPECT(oai_check_context(&r, 2040, 2048, 0, &max_out, &e) == SL_OK);
    EXPECT_EQ_INT(max_out, 8);
    EXPECT(oai_check_context(&r, 5000, 2048, 0, &max_out, &e) == SL_ERR);
    EXPECT_STR_EQ(e.param, "prompt");
    oai_request_free(&r);
    // --max-tokens-cap bounds the budget of a request without max_tokens too
    ASSERT(parse(OAI_CHAT, "{" CHAT_MSGS "}", &r, &e) == SL_OK);
    EXPECT(oai_check_context(&r, 48, 2048, 64, &max_out, &e) == SL_OK);
    EXPECT_EQ_INT(max_out, 64);
    EXPECT(oai_check_context(&r, 2000, 2048, 64, &max_out, &e) == SL_OK);
    EXPECT_EQ_INT(max_out, 48);
    oai_request_free(&r);
    ASSERT(parse(OAI_COMPLETION, "{\"prompt\":\"x\"}", &r, &e) == SL_OK);
    EXPECT(oai_check_context(&r, 48, 2048, 8, &max_out, &e) == SL_OK);
    EXPECT_EQ_INT(max_out, 8);
    oai_request_free(&r);
}

static void test_chat_full(void) {
    const char *body =
        "{\"model\":\"org/smol-v2\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"text\",\"text\":\"b\"}],\"name\":\"ann\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"content\":\"42\",\"tool_call_id\":\"c1\"}],"
        "\"max_completion_tokens\":7,\"max_tokens\":99,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,"
        "\"n\":2,\"stop\":\"END\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"seed\":-3,"
        "\"logprobs\":true,\"top_logprobs\":3,\"logit_bias\":{\"50\":-100,\"7\":2.5},\"presence_penalty\":0.5,"
        "\"frequency_penalty\":-0.5,\"repetition_penalty\":1.1,\"ignore_eos\":true,\"min_tokens\":2,"
        "\"stop_token_ids\":[2,3],\"skip_special_tokens\":false,\"include_stop_str_in_output\":true,"
        "\"priority\":-4,\"user\":\"u\",\"request_id\":\"rq\",\"metadata\":{\"k\":1},\"store\":false,"
        "\"unknown_field\":[1,2,{\"x\":null}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"parameters\":{\"type\":\"object\"}}}],\"tool_choice\":\"auto\",\"response_format\":{\"type\":\"text\"}}";
    OaiRequest r;
    ApiError e = {0};
    ASSERT(parse(OAI_CHAT, body, &r, &e) == SL_OK, "%s", e.message);
    EXPECT_STR_EQ(r.model, "org/smol-v2");
    ASSERT(r.n_messages == 4);
    EXPECT_STR_EQ(r.messages[0].role, "system");
    EXPECT_STR_EQ(r.messages[1].content, "a\nb");
    EXPECT_EQ_INT(r.messages[1].content_len, 3);
    EXPECT_STR_EQ(r.messages[1].name, "ann");
    EXPECT(r.messages[2].content == NULL);
    EXPECT(r.messages[2].tool_calls_json && strstr(r.messages[2].tool_calls_json, "\"arguments\":\"{}\""));
    EXPECT_STR_EQ(r.messages[3].tool_call_id, "c1");
    EXPECT_EQ_INT(r.max_tokens, 7);
    EXPECT_STR_EQ(r.max_tokens_param, "max_completion_tokens");
    EXPECT_NEAR(r.temperature, 0.5, 1e-7);
    EXPECT_NEAR(r.top_p, 0.9, 1e-7);
    EXPECT_EQ_INT(r.top_k, 40);
    EXPECT_NEAR(r.min_p, 0.05, 1e-7);
    EXPECT_EQ_INT(r.n, 2);
    ASSERT(r.n_stop == 1);
    EXPECT_STR_EQ(r.stop[0], "END");
    EXPECT(r.stream && r.include_usage);
    EXPECT(r.has_seed && (int64_t)r.seed == -3);
    EXPECT_EQ_INT(r.logprobs, 3);
    ASSERT(r.n_bias == 2);
    EXPECT(r.bias_ids[0] == 50 && r.bias_vals[0] == -100.0f && r.bias_ids[1] == 7 && r.bias_vals[1] == 2.5f);
    EXPECT_NEAR(r.presence_penalty, 0.5, 1e-7);
    EXPECT_NEAR(r.frequency_penalty, -0.5, 1e-7);
    EXPECT_NEAR(r.repetition_penalty, 1.1, 1e-6);
    EXPECT(r.ignore_eos && !r.skip_special_tokens && r.include_stop_str_in_output);
    EXPECT_EQ_INT(r.min_tokens, 2);
    ASSERT(r.n_stop_token_ids == 2);
    EXPECT(r.stop_token_ids[0] == 2 && r.stop_token_ids[1] == 3);
    EXPECT_EQ_INT(r.priority, -4);
    EXPECT_STR_EQ(r.user, "u");
    EXPECT_STR_EQ(r.request_id, "rq");
    EXPECT(r.tools_json && strstr(r.tools_json, "\"name\":\"f\""));
    EXPECT_EQ_INT(r.tool_choice, OAI_TOOL_CHOICE_AUTO);
    EXPECT(r.add_generation_prompt && !r.continue_final_message);
    oai_request_free(&r);
    oai_request_free(&r); // a freed (zeroed) request frees again safely
}

static void test_chat_defaults(void) {
    OaiRequest r;
    ApiError e = {0};
    ASSERT(parse(OAI_CHAT, "{" CHAT_MSGS ",\"model\":null,\"max_tokens\":null,\"stop\":null,\"n\":null}", &r, &e) == SL_OK,
           "%s", e.message);
    EXPECT(r.model == NULL);
    EXPECT_EQ_INT(r.max_tokens, -1);
    EXPECT_NEAR(r.temperature, 1.0, 0);
    EXPECT_NEAR(r.top_p, 1.0, 0);
    EXPECT_EQ_INT(r.top_k, -1);
    EXPECT_NEAR(r.repetition_penalty, 1.0, 0);
    EXPECT_EQ_INT(r.n, 1);
    EXPECT_EQ_INT(r.n_stop, 0);
    EXPECT_EQ_INT(r.logprobs, -1);
    EXPECT(!r.stream && !r.include_usage && !r.has_seed && r.skip_special_tokens && !r.ignore_eos);
    EXPECT_EQ_INT(r.tool_choice, OAI_TOOL_CHOICE_NONE);
    oai_request_free(&r);
    // logprobs without top_logprobs: the chosen token only
    ASSERT(parse(OAI_CHAT, "{" CHAT_MSGS ",\"logprobs\":true}", &r, &e) == SL_OK);
    EXPECT_EQ_INT(r.logprobs, 0);
    oai_request_free(&r);
}

static void test_completion_prompts(void) {
    struct {
        const char *body;
        int n_prompts;
        int first_ids; // n_ids of prompts[0], -1 for text
    } cases[] = {
        {"{\"prompt\":\"Hello\"}", 1, -1},
        {"{\"prompt\":[\"a\",\"b\",\"c\"]}", 3, -1},
        {"{\"prompt\":[1,2,3]}", 1, 3},
        {"{\"prompt\":[[1],[2,3]]}", 2, 1},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        OaiRequest r;
        ApiError e = {0};
        ASSERT(parse(OAI_COMPLETION, cases[i].body, &r, &e) == SL_OK, "%s: %s", cases[i].body, e.message);
        EXPECT_EQ_INT(r.n_prompts, cases[i].n_prompts);
        if (cases[i].first_ids < 0) EXPECT(r.prompts[0].text != NULL);
        else EXPECT_EQ_INT(r.prompts[0].n_ids, cases[i].first_ids);
        oai_request_free(&r);
    }
    OaiRequest r;
    ApiError e = {0};
    ASSERT(parse(OAI_COMPLETION, "{\"prompt\":\"Hi\",\"echo\":false,\"logprobs\":2,\"best_of\":1}", &r, &e) ==
           SL_OK, "%s", e.message);
    EXPECT_EQ_INT(r.logprobs, 2);
    EXPECT_STR_EQ(r.prompts[0].text, "Hi");
    EXPECT_EQ_INT(r.prompts[0].len, 2);
    oai_request_free(&r);
}

// ---- responses

static void test_json_str(void) {
    struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        {"plain", 5, "\"plain\""},
        {"q\"b\\n\nt\tr\r", 10, "\"q\\\"b\\\\n\\nt\\tr\\r\""},
        {"\x01\x1f", 2, "\"\\u0001\\u001f\""},
        {"\xe2\x80\xa8|\xe2\x80\xa9", 7, "\"\\u2028|\\u2029\""},
        {"caf\xc3\xa9 \xf0\x9f\x98\x80", 10, "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""},
        {"a\xe2\x82", 3, "\"a\xef\xbf\xbd\""},   // a split character: one U+FFFD for its bytes
        {"\xe2\x82x\xc3", 4, "\"\xef\xbf\xbdx\xef\xbf\xbd\""},
        {"\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, // a surrogate: 3 subparts
        {"\xff", 1, "\"\xef\xbf\xbd\""},
        {"a\0b", 3, "\"a\\u0000b\""},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        SBuf b = {0};
        json_str(&b, cases[i].in, cases[i].n);
        EXPECT_STR_EQ(b.data, cases[i].out);
        sbuf_free(&b);
    }
    struct {
        float v;
        const char *out;
    } fl[] = {{-0.01f, "-0.01"}, {0.0f, "0.0"}, {-1.0f, "-1.0"}, {-12.345678f, "-12.345678"}, {-1e-7f, "-1e-07"}, {-10.0f, "-10.0"}, {-0.5f, "-0.5"},
              {-INFINITY, "-9999.0"}};
    for (size_t i = 0; i < ARRAY_LEN(fl); i++) {
        SBuf b = {0};
        json_float(&b, fl[i].v);
        EXPECT_STR_EQ(b.data, fl[i].out);
        sbuf_free(&b);
    }
}

static RespMeta meta(OaiKind kind, bool usage) {
    RespMeta m;
    resp_meta_init(&m, kind, "smol", NULL, usage);
    snprintf(m.id, sizeof m.id, "%s", kind == OAI_CHAT ? "chatcmpl-1" : "cmpl-1");
    m.created = 1700000000;
    return m;
}

static void test_sse_chat(void) {
    RespMeta m = meta(OAI_CHAT, true);
    SBuf b = {0};
    resp_sse_chat_role(&b, &m, 0, false);
    RespChoice c = {.index = 0, .text = "Hel", .text_len = 3, .stop_token = -1};
    resp_sse_delta(&b, &m, &c);
    c.finish_reason = "stop";
    resp_sse_finish(&b, &m, &c);
    RespUsage u = {9, 12, 4};
    resp_sse_usage(&b, &m, &u);
    resp_sse_done(&b);
    const char *H = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                    "\"model\":\"smol\",\"system_fingerprint\":null,";
    SBuf want = {0};
    sbuf_printf(&want,
                "%s\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                "\"finish_reason\":null}],\"usage\":null}\n\n"
                "%s\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"logprobs\":null,\"finish_reason\":null}],"
                "\"usage\":null}\n\n"
                "%s\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}],"
                "\"usage\":null}\n\n"
                "%s\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21,"
                "\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n"
                "data: [DONE]\n\n",
                H, H, H, H);
    EXPECT_STR_EQ(b.data, want.data);
    // without include_usage no chunk mentions usage
    RespMeta m2 = meta(OAI_CHAT, false);
    sbuf_reset(&b);
    resp_sse_chat_role(&b, &m2, 1, true); // before a tool call: content null, as OpenAI's
    EXPECT(strstr(b.data, "usage") == NULL && strstr(b.data, "\"index\":1") != NULL);
    EXPECT(strstr(b.data, "{\"role\":\"assistant\",\"content\":null}") != NULL);
    EXPECT(b.data[b.len - 1] == '\n' && b.data[b.len - 2] == '\n' && memchr(b.data, '\n', b.len - 2) == NULL);
    sbuf_reset(&b);
    resp_sse_error(&b, "engine \"x\" failed", "server_error", NULL);
    resp_sse_keepalive(&b);
    EXPECT_STR_EQ(b.data, "data: {\"error\":{\"message\":\"engine \\\"x\\\" failed\",\"type\":\"server_error\","
                          "\"param\":null,\"code\":null}}\n\n: keep-alive\n\n");
    sbuf_free(&b);
    sbuf_free(&want);
}

static void test_bodies(void) {
    RespMeta m = meta(OAI_CHAT, false);
    RespToken t = {.piece = "Hi", .piece_len = 2, .logprob = -0.01f, .n_top = 1};
    t.top_piece[0] = "Hi";
    t.top_len[0] = 2;
    t.top_logprob[0] = -0.01f;
    RespChoice c = {.index = 0, .text = "Hi", .text_len = 2, .finish_reason = "stop", .stop_token = -1,
                    .tokens = &t, .n_tokens = 1};
    RespUsage u = {9, 2, 0};
    SBuf b = {0};
    resp_chat_body(&b, &m, &c, 1, &u);
    EXPECT_STR_EQ(b.data,
                  "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"smol\","
                  "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                  "\"content\":\"Hi\",\"refusal\":null},\"logprobs\":{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.01,"
                  "\"bytes\":[72,105],\"top_logprobs\":[{\"token\":\"Hi\",\"logprob\":-0.01,\"bytes\":[72,105]}]}],"
                  "\"refusal\":null},\"finish_reason\":\"stop\",\"stop_reason\":null}],\"usage\":{\"prompt_tokens\":9,"
                  "\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}");
    sbuf_reset(&b);
    RespMeta mc = meta(OAI_COMPLETION, false);
    RespToken t2[2] = {{.piece = " a", .piece_len = 2, .logprob = -1.5f}, {.piece = "b", .piece_len = 1, .logprob = -0.5f, .n_top = 1}};
    t2[1].top_piece[0] = "c";
    t2[1].top_len[0] = 1;
    t2[1].top_logprob[0] = -0.25f;
    RespChoice cc[2] = {{.index = 0, .text = " ab", .text_len = 3, .finish_reason = "length", .stop_token = -1,
                         .tokens = t2, .n_tokens = 2, .text_offset = 5},
                        {.index = 1, .text = "x", .text_len = 1, .finish_reason = "stop", .stop_str = "\n", .stop_token = -1}};
    resp_completion_body(&b, &mc, cc, 2, &u);
    EXPECT_STR_EQ(b.data,
                  "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,\"model\":\"smol\","
                  "\"system_fingerprint\":null,\"choices\":[{\"index\":0,\"text\":\" ab\",\"logprobs\":{\"tokens\":[\" a\",\"b\"],"
                  "\"token_logprobs\":[-1.5,-0.5],\"top_logprobs\":[{\" a\":-1.5},{\"c\":-0.25,\"b\":-0.5}],"
                  "\"text_offset\":[5,7]},\"finish_reason\":\"length\",\"stop_reason\":null},{\"index\":1,\"text\":\"x\","
                  "\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":\"\\n\"}],\"usage\":{\"prompt_tokens\":9,"
                  "\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":0}}}");
    sbuf_reset(&b);
    ApiError e;
    api_error(&e, 404, NULL, "model_not_found", "model", "The model `%s` does not exist", "x");
    resp_error_body(&b, &e);
    EXPECT_STR_EQ(b.data, "{\"error\":{\"message\":\"The model `x` does not exist\",\"type\":\"invalid_request_error\","
                          "\"param\":\"model\",\"code\":\"model_not_found\"}}");
    sbuf_reset(&b);
    api_error(&e, 500, "server_error", NULL, NULL, "boom");
    resp_error_body(&b, &e);
    EXPECT_STR_EQ(b.data, "{\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    sbuf_free(&b);
}

static void test_meta_ids(void) {
    RespMeta a, b;
    resp_meta_init(&a, OAI_CHAT, "m", "fp", false);
    resp_meta_init(&b, OAI_COMPLETION, "m", "fp", false);
    EXPECT(!strncmp(a.id, "chatcmpl-", 9) && strlen(a.id) == 9 + 24, "%s", a.id);
    EXPECT(!strncmp(b.id, "cmpl-", 5) && strlen(b.id) == 5 + 24, "%s", b.id);
    EXPECT(strcmp(a.id + 9, b.id + 5) != 0);
    EXPECT(a.created > 1700000000);
}

int main(void) {
    TEST_RUN(test_bad_inputs);
    TEST_RUN(test_deep_nesting);
    TEST_RUN(test_context);
    TEST_RUN(test_chat_full);
    TEST_RUN(test_chat_defaults);
    TEST_RUN(test_completion_prompts);
    TEST_RUN(test_json_str);
    TEST_RUN(test_sse_chat);
    TEST_RUN(test_bodies);
    TEST_RUN(test_meta_ids);
    return test_summary();
}
