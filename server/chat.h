// chat.h: chat messages -> prompt text, through the model's chat template (the GGUF's
// tokenizer.chat_template or an HF tokenizer_config.json's chat_template, as the engine found it;
// or --chat-template FILE) rendered by engine/template/template.h, or a built-in ChatML rendering when the
// model has no template.
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine/engine.h"
#include "engine/template/template.h"
#include "engine/tokenizer/tokenizer.h"
#include "server/openai.h"

typedef struct {
    ChatTemplate *tmpl;  // NULL: built-in ChatML
    char *bos, *eos;     // the model's BOS/EOS token texts for the template (NULL when none)
    const char *source;  // where the template came from, for the log (valid while the engine lives)
    bool tools_ignored;  // the template never renders `tools` (a request with tools logs a warning once)
} ChatRenderer;

// Loads the template: template_path when given (a Jinja file; an error if it does not parse),
// else the engine's model's own (engine_chat_template; ChatML with a warning if it has none or it
// does not parse). The tokenizer is the engine's. model_path names the model in messages.
int chat_init(ChatRenderer *c, const char *model_path, const Engine *e, const char *template_path, char *err);
void chat_free(ChatRenderer *c); // accepts a zeroed struct

// The prompt text of a chat request (malloc'd, NUL-terminated): messages, tools,
// add_generation_prompt, continue_final_message and chat_template_kwargs as vLLM applies them.
// A template that rejects the request is a 400 naming 'messages'.
int chat_render(const ChatRenderer *c, const OaiRequest *r, char **out, size_t *len, ApiError *e);
