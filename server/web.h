// web.h: the browser chat page (GET / and /chat) and its files, built into the binary.
//
// The files are web/chat.html, web/chat.js, web/chat.css and Debian's libjs-marked (the
// markdown renderer, with its licence); scripts/embed-web.sh turns them into WEB_ASSETS at
// build time, so a deployed daemon needs no files beside it. The page talks to the API like
// any client (fetch with the API key it asks the user for), so it is served without one.
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *url;          // "/chat/chat.js"; "/chat" is the page itself
    const char *content_type;
    const unsigned char *data;
    size_t len;
} WebAsset;

// Ends with a row whose url is NULL (generated into $(BUILD)/server/web_assets.c).
extern const WebAsset WEB_ASSETS[];

// The file served at url ("/" is the page), or NULL.
const WebAsset *web_asset(const char *url);
