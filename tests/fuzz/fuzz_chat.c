// fuzz_chat: libFuzzer harness for the chat-render path (server/chat.c): a chat request body
// through oai_parse, then chat_render with the built-in ChatML and four real templates (the
// default model's, Llama 3's, and two with tools), continue_final_message included. Checked: a
// failure is a 400 naming 'messages'; a prompt that continues the final message ends with
// that message's text. Seeds: tests/fuzz/corpus/fuzz_chat/.
#define _GNU_SOURCE // memmem
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "server/chat.h"
#include "server/openai.h"
#include "tests/fuzz/fuzz.h"

static const char *const TEMPLATES[] = {
    NULL, // ChatML
    TEST_DATA_DIR "/chat_templates/smollm2-135m-instruct.jinja",
    TEST_DATA_DIR "/chat_templates/llama-3-instruct.jinja",
    TEST_DATA_DIR "/chat_templates_tools/Qwen-Qwen3-0.6B.jinja",
    TEST_DATA_DIR "/chat_templates_tools/Mistral-Small-3.2-24B-Instruct-2506.jinja",
};
#define N_RENDERERS (int)(sizeof TEMPLATES / sizeof TEMPLATES[0])
static ChatRenderer renderers[N_RENDERERS];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    fz_quiet();
    char err[ERR_MAX];
    for (int i = 0; i < N_RENDERERS; i++) {
        ChatRenderer *c = &renderers[i];
        c->bos = xstrdup("<s>");
        c->eos = xstrdup("</s>");
        c->source = TEMPLATES[i] ? TEMPLATES[i] : "built-in ChatML";
        if (!TEMPLATES[i]) continue;
        size_t len;
        char *src = file_read_all(TEMPLATES[i], &len, err);
        CHECK(src, "%s", err);
        CHECK(tmpl_parse(&c->tmpl, src, len, err) == SL_OK, "%s: %s", TEMPLATES[i], err);
        free(src);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *body = fz_strdup(data, size);
    OaiLimits lim = {.vocab = 49152, .max_n = 1 << 30};
    OaiRequest r;
    ApiError e;
    if (oai_parse(OAI_CHAT, body, size, &lim, &r, &e) != SL_OK) {
        free(body);
        return 0;
    }
    const OaiMessage *last = &r.messages[r.n_messages - 1];
    for (int i = 0; i < N_RENDERERS; i++) {
        char *text = NULL;
        size_t len = 0;
        memset(&e, 0, sizeof e);
        if (chat_render(&renderers[i], &r, &text, &len, &e) != SL_OK) {
            CHECK(!text && e.status == 400 && !strcmp(e.param, "messages") && e.message[0], "%s: error %d '%s'",
                  renderers[i].source, e.status, e.param);
            continue;
        }
        CHECK(text && strlen(text) == len, "%s: %zu bytes, strlen %zu", renderers[i].source, len, strlen(text));
        // the text is found unless the template rewrote it (trim, escape): then the whole rendering stays
        if (r.continue_final_message && last->content_len > 0 && len >= last->content_len &&
            memmem(text, len, last->content, last->content_len))
            CHECK(!memcmp(text + len - last->content_len, last->content, last->content_len),
                  "%s: continue_final_message cut the prompt elsewhere", renderers[i].source);
        free(text);
    }
    oai_request_free(&r);
    free(body);
    return 0;
}
