// spec_config.c: see spec_config.h. The keys and defaults are vLLM's SpeculativeConfig: when only
// one of prompt_lookup_min / _max is given the other takes its value, and when neither is, both
// are 5; "model" without "method" means "draft_model".
#include "config/spec_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/common.h"

#define SPEC_LOOKUP_DEFAULT 5
#define SPEC_LOOKUP_MAX_LIMIT 64 // longest n-gram matched: the search is O(prompt_lookup_max * len)

// An integer-valued JSON number in [lo, hi] into *out.
static int spec_int(const cJSON *item, const char *key, int lo, int hi, int *out, char *err) {
    double v = item->valuedouble;
    if (!cJSON_IsNumber(item) || v != floor(v))
        return seterr(err, "--speculative-config: \"%s\" must be an integer", key);
    if (v < lo || v > hi)
        return seterr(err, "--speculative-config: \"%s\" must be between %d and %d, got %.0f", key, lo, hi, v);
    *out = (int)v;
    return SL_OK;
}

static int spec_parse_obj(const cJSON *root, SpecConfig *c, char *err) {
    if (!cJSON_IsObject(root)) return seterr(err, "--speculative-config: expected a JSON object");
    const char *method = NULL;
    int k = -1, lmax = -1, lmin = -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        const char *key = it->string;
        if (!strcmp(key, "method")) {
            if (!cJSON_IsString(it)) return seterr(err, "--speculative-config: \"method\" must be a string");
            method = it->valuestring;
        } else if (!strcmp(key, "num_speculative_tokens")) {
            if (spec_int(it, key, 1, SPEC_MAX_TOKENS, &k, err) != SL_OK) return SL_ERR;
        } else if (!strcmp(key, "prompt_lookup_max")) {
            if (spec_int(it, key, 1, SPEC_LOOKUP_MAX_LIMIT, &lmax, err) != SL_OK) return SL_ERR;
        } else if (!strcmp(key, "prompt_lookup_min")) {
            if (spec_int(it, key, 1, SPEC_LOOKUP_MAX_LIMIT, &lmin, err) != SL_OK) return SL_ERR;
        } else if (!strcmp(key, "disable_by_batch_size")) {
            if (spec_int(it, key, 2, 1 << 16, &c->disable_by_batch_size, err) != SL_OK) return SL_ERR;
        } else if (!strcmp(key, "model")) {
            if (!cJSON_IsString(it) || !it->valuestring[0])
                return seterr(err, "--speculative-config: \"model\" must be a path (a GGUF file or an HF directory)");
            if (strlen(it->valuestring) >= sizeof c->model)
                return seterr(err, "--speculative-config: \"model\" is longer than %zu bytes", sizeof c->model - 1);
            snprintf(c->model, sizeof c->model, "%s", it->valuestring);
        } else {
            return seterr(err, "--speculative-config: unknown key \"%s\" (known: method, model, "
                          "num_speculative_tokens, prompt_lookup_max, prompt_lookup_min, disable_by_batch_size)", key);
        }
    }
    if (!method) method = c->model[0] ? "draft_model" : NULL;
    if (!method) return seterr(err, "--speculative-config: \"method\" (\"ngram\") or \"model\" is required");
    if (k < 0) return seterr(err, "--speculative-config: \"num_speculative_tokens\" is required");
    if (!strcmp(method, "draft_model")) {
        if (!c->model[0]) return seterr(err, "--speculative-config: method \"draft_model\" needs \"model\": PATH");
        if (lmin >= 0 || lmax >= 0)
            return seterr(err, "--speculative-config: prompt_lookup_min / prompt_lookup_max are for method \"ngram\", "
                          "not a draft model");
        c->method = SPEC_DRAFT;
        c->num_speculative_tokens = k;
        return SL_OK;
    }
    if (strcmp(method, "ngram"))
        return seterr(err, "--speculative-config: unknown method \"%s\" (supported: \"ngram\", \"draft_model\")",
                      method);
    if (c->model[0])
        return seterr(err, "--speculative-config: method \"ngram\" takes no \"model\" (a draft model's method is "
                      "\"draft_model\")");
    if (lmin < 0 && lmax < 0) lmin = lmax = SPEC_LOOKUP_DEFAULT;
    else if (lmin < 0) lmin = lmax;
    else if (lmax < 0) lmax = lmin;
    if (lmin > lmax)
        return seterr(err, "--speculative-config: \"prompt_lookup_min\" (%d) must be <= \"prompt_lookup_max\" (%d)",
                      lmin, lmax);
    c->method = SPEC_NGRAM;
    c->num_speculative_tokens = k;
    c->prompt_lookup_max = lmax;
    c->prompt_lookup_min = lmin;
    return SL_OK;
}

int spec_config_parse(const char *json, SpecConfig *out, char *err) {
    memset(out, 0, sizeof *out);
    if (!json || !json[0]) return SL_OK;
    cJSON *root = cJSON_Parse(json);
    if (!root) return seterr(err, "--speculative-config: not valid JSON: '%.80s'", json);
    SpecConfig c = {0};
    int rc = spec_parse_obj(root, &c, err);
    cJSON_Delete(root);
    if (rc == SL_OK) *out = c;
    return rc;
}
