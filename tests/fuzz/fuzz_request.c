// fuzz_request: libFuzzer harness for a request body -> OaiRequest (server/openai.c and
// openai_check.c), without the HTTP layer: the same body is read as a chat and as a completions
// request, as /tokenize reads it, and what passes goes through the context check. Built and run
// by `make fuzz` (docs/architecture.md, tests/fuzz/).
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/common.h"
#include "server/openai.h"
#include "tests/fuzz/fuzz.h"

static const char *const NAMES[] = {"SmolLM2-135M-Instruct", "m"};

// What a parsed request promises the engine: the invariants generate.c relies on.
static void check_request(const OaiRequest *r, const OaiLimits *lim) {
    CHECK(r->n >= 1 && r->n <= lim->max_n, "n %d out of [1, %d]", r->n, lim->max_n);
    CHECK(r->max_tokens >= -1 && (lim->max_tokens == 0 || r->max_tokens <= lim->max_tokens), "max_tokens %d",
          r->max_tokens);
    CHECK(r->logprobs >= -1 && r->logprobs <= OAI_MAX_LOGPROBS, "logprobs %d", r->logprobs);
    CHECK(r->n_stop >= 0 && r->n_stop <= OAI_MAX_STOP, "n_stop %d", r->n_stop);
    for (int i = 0; i < r->n_stop; i++) CHECK(r->stop[i] && r->stop[i][0], "empty stop string %d", i);
    for (int i = 0; i < r->n_bias; i++) CHECK(r->bias_ids[i] >= 0 && r->bias_ids[i] < lim->vocab, "bias id");
    for (int i = 0; i < r->n_stop_token_ids; i++)
        CHECK(r->stop_token_ids[i] >= 0 && r->stop_token_ids[i] < lim->vocab, "stop token id");
    if (r->kind == OAI_CHAT) {
        CHECK(r->n_messages >= 1, "a chat request without messages");
        for (int i = 0; i < r->n_messages; i++) {
            const OaiMessage *m = &r->messages[i];
            CHECK(m->role, "message %d without a role", i);
            CHECK(!m->content || strlen(m->content) == m->content_len, "message %d: content_len", i);
        }
    } else {
        CHECK(r->n_prompts >= 1 && r->n_prompts <= OAI_MAX_PROMPTS, "n_prompts %d", r->n_prompts);
        for (int i = 0; i < r->n_prompts; i++) {
            const OaiPrompt *p = &r->prompts[i];
            if (p->text) CHECK(strlen(p->text) == p->len, "prompt %d: len", i);
            for (int j = 0; j < p->n_ids; j++) CHECK(p->ids[j] >= 0 && p->ids[j] < lim->vocab, "prompt id");
        }
    }
}

static void check_error(const ApiError *e) {
    CHECK(e->status >= 400 && e->status < 600, "error status %d", e->status);
    CHECK(e->type && e->message[0], "an error without a type or message");
    CHECK(memchr(e->param, 0, sizeof e->param) && memchr(e->message, 0, sizeof e->message), "unterminated error");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    // the HTTP layer hands the body over NUL-terminated in a buffer of its own
    char *body = fz_strdup(data, size);
    OaiLimits lim = {.vocab = 49152, .max_n = 8, .max_tokens = size & 1 ? 0 : 4096, .model_names = NAMES,
                     .n_model_names = 2};
    for (int kind = OAI_CHAT; kind <= OAI_COMPLETION; kind++) {
        OaiRequest r;
        ApiError e;
        memset(&e, 0, sizeof e);
        if (oai_parse((OaiKind)kind, body, size, &lim, &r, &e) != SL_OK) {
            check_error(&e);
            continue;
        }
        check_request(&r, &lim);
        int max_out = 0;
        for (int n_prompt = 1; n_prompt <= 8192; n_prompt *= 16)
            if (oai_check_context(&r, n_prompt, 8192, lim.max_tokens, &max_out, &e) == SL_OK)
                CHECK(max_out >= 0 && n_prompt + (int64_t)max_out <= 8192, "max_out %d", max_out);
            else
                check_error(&e);
        oai_request_free(&r);
    }
    ApiError e;
    cJSON *root = oai_parse_object(body, size, &e);
    if (root) {
        int32_t *ids = NULL;
        int n = 0;
        const cJSON *tokens = cJSON_GetObjectItemCaseSensitive(root, "tokens");
        if (tokens && oai_token_ids(tokens, lim.vocab, "tokens", &ids, &n, &e) == SL_OK)
            for (int i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < lim.vocab, "token id");
        free(ids);
        cJSON_Delete(root);
    }
    free(body);
    return 0;
}
