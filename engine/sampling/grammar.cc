// grammar.cc: the C API of grammar.h over XGrammar's C++ classes (TokenizerInfo,
// GrammarCompiler, CompiledGrammar, GrammarMatcher). The only C++ file of the project: every
// call that can throw is inside a try block, and a client's mistake comes back as SL_ERR with
// XGrammar's message; nothing escapes into the C callers.
#include <xgrammar/xgrammar.h>

#include <picojson.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

extern "C" {
#include "common/common.h"
#include "engine/sampling/grammar.h"
}

struct GrammarVocab {
    xgrammar::TokenizerInfo info;
    int vocab;
    int compile_threads;
};

struct Grammar {
    xgrammar::CompiledGrammar compiled;
    int vocab;
};

struct GrammarMatcher {
    xgrammar::GrammarMatcher m;
    int vocab;
};

const char *grammar_kind_name(GrammarKind k) {
    switch (k) {
    case GRAMMAR_NONE: return "none";
    case GRAMMAR_JSON_OBJECT: return "json_object";
    case GRAMMAR_JSON_SCHEMA: return "json_schema";
    case GRAMMAR_REGEX: return "regex";
    case GRAMMAR_CHOICE: return "choice";
    case GRAMMAR_EBNF: return "grammar";
    case GRAMMAR_STRUCTURAL_TAG: return "structural_tag";
    }
    return "?";
}

// XGrammar's messages start with "[hh:mm:ss] /path/of/the/build/file.cc:83: " and can run to
// several lines (a caret under the offending spot); the API's error is the message alone, on one
// line.
static int fail(char *err, const char *what, const char *msg) {
    const char *cc = msg[0] == '[' ? strstr(msg, ".cc:") : nullptr;
    if (cc) {
        const char *p = cc + 4;
        while (*p >= '0' && *p <= '9') p++;
        if (p[0] == ':' && p[1] == ' ') msg = p + 2;
    }
    snprintf(err, ERR_MAX, "%s%s", what, msg);
    for (char *p = err; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
    for (size_t n = strlen(err); n > 0 && err[n - 1] == ' '; n--) err[n - 1] = '\0';
    return SL_ERR;
}

int grammar_vocab_new(GrammarVocab **out, int vocab, const char *const *pieces, const size_t *lens,
                      const bool *special, const int32_t *stop_ids, int n_stop, int compile_threads, char *err) {
    *out = nullptr;
    try {
        std::vector<std::string> enc((size_t)vocab);
        for (int i = 0; i < vocab; i++)
            if (!special[i]) enc[(size_t)i].assign(pieces[i], lens[i]);
        std::vector<int32_t> stops(stop_ids, stop_ids + n_stop);
        // RAW: the strings are already the tokens' bytes (see grammar.h)
        xgrammar::TokenizerInfo info(enc, xgrammar::VocabType::RAW, vocab, stops, false);
        *out = new GrammarVocab{info, vocab, compile_threads < 1 ? 1 : compile_threads};
        return SL_OK;
    } catch (const std::exception &ex) {
        return fail(err, "XGrammar: ", ex.what());
    }
}

void grammar_vocab_free(GrammarVocab *v) { delete v; }

// guided_choice: the output is one of the strings verbatim. Each becomes an EBNF string literal
// ("..." with \", \\ and \xHH for control bytes; UTF-8 passes through) and root their union.
static bool choice_to_ebnf(const std::string &json, std::string *ebnf, std::string *why) {
    picojson::value v;
    std::string perr = picojson::parse(v, json);
    if (!perr.empty() || !v.is<picojson::array>()) {
        *why = "expected a list of strings";
        return false;
    }
    const picojson::array &a = v.get<picojson::array>();
    if (a.empty()) {
        *why = "the list of choices is empty";
        return false;
    }
    *ebnf = "root ::= ";
    for (size_t i = 0; i < a.size(); i++) {
        if (!a[i].is<std::string>()) {
            *why = "expected a list of strings";
            return false;
        }
        const std::string &s = a[i].get<std::string>();
        if (i) *ebnf += " | ";
        *ebnf += '"';
        for (unsigned char c : s) {
            char hex[8];
            if (c == '"' || c == '\\') {
                *ebnf += '\\';
                *ebnf += (char)c;
            } else if (c < 0x20 || c == 0x7f) {
                snprintf(hex, sizeof hex, "\\x%02x", c);
                *ebnf += hex;
            } else {
                *ebnf += (char)c;
            }
        }
        *ebnf += '"';
    }
    *ebnf += "\n";
    return true;
}

int grammar_compile(const GrammarVocab *v, GrammarKind kind, const char *text, size_t len, Grammar **out,
                    char *err) {
    *out = nullptr;
    std::string src = text ? std::string(text, len) : std::string();
    try {
        // The engine caches compiled grammars itself (LRU by canonical text); XGrammar's own
        // cache would hold a second copy of each.
        xgrammar::GrammarCompiler compiler(v->info, v->compile_threads, false);
        switch (kind) {
        case GRAMMAR_JSON_OBJECT: // any object (XGrammar's builtin JSON grammar takes any value)
            *out = new Grammar{compiler.CompileJSONSchema("{\"type\": \"object\"}", false), v->vocab};
            break;
        case GRAMMAR_JSON_SCHEMA:
            // compact JSON (no free whitespace): a small model given free whitespace can spend
            // its whole budget on newlines; strict mode as vLLM (no undeclared properties)
            *out = new Grammar{compiler.CompileJSONSchema(src, false, std::nullopt, std::nullopt, true), v->vocab};
            break;
        case GRAMMAR_REGEX:
            *out = new Grammar{compiler.CompileRegex(src), v->vocab};
            break;
        case GRAMMAR_CHOICE: {
            std::string ebnf, why;
            if (!choice_to_ebnf(src, &ebnf, &why)) return fail(err, "Invalid choice: ", why.c_str());
            *out = new Grammar{compiler.CompileGrammar(ebnf, "root"), v->vocab};
            break;
        }
        case GRAMMAR_EBNF:
            // GBNF / XGrammar EBNF names its rules "name ::= ..."; anything else is read as Lark
            // (vLLM's grammar field accepts both)
            if (src.find("::=") != std::string::npos)
                *out = new Grammar{compiler.CompileGrammar(src, "root"), v->vocab};
            else
                *out = new Grammar{compiler.CompileLark(src), v->vocab};
            break;
        case GRAMMAR_STRUCTURAL_TAG:
            *out = new Grammar{compiler.CompileStructuralTag(src), v->vocab};
            break;
        case GRAMMAR_NONE:
            return fail(err, "", "no grammar");
        }
        return SL_OK;
    } catch (const std::exception &ex) {
        return fail(err, "", ex.what());
    }
}

void grammar_free(Grammar *g) { delete g; }

size_t grammar_memory_bytes(const Grammar *g) { return g->compiled.MemorySizeBytes(); }

int grammar_mask_words(int vocab) { return xgrammar::GetBitmaskSize(vocab); }

void grammar_mask_apply(const uint32_t *mask, float *logits, int vocab) {
    for (int w = 0; w * 32 < vocab; w++) {
        uint32_t bits = mask[w];
        if (bits == 0xffffffffu) continue;
        int end = w * 32 + 32 < vocab ? w * 32 + 32 : vocab;
        for (int id = w * 32; id < end; id++)
            if (!(bits >> (id - w * 32) & 1u)) logits[id] = -INFINITY;
    }
}

GrammarMatcher *grammar_matcher_new(const Grammar *g) {
    try {
        return new GrammarMatcher{xgrammar::GrammarMatcher(g->compiled), g->vocab};
    } catch (const std::exception &ex) {
        DIE("XGrammar matcher: %s", ex.what()); // a compiled grammar always makes a matcher
    }
}

void grammar_matcher_free(GrammarMatcher *m) { delete m; }

bool grammar_matcher_fill(GrammarMatcher *m, uint32_t *mask) {
    int64_t shape = grammar_mask_words(m->vocab);
    DLTensor t{};
    t.data = mask;
    t.device = DLDevice{kDLCPU, 0};
    t.ndim = 1;
    t.dtype = xgrammar::GetBitmaskDLType();
    t.shape = &shape;
    t.strides = nullptr;
    t.byte_offset = 0;
    try {
        return m->m.FillNextTokenBitmask(&t);
    } catch (const std::exception &ex) {
        DIE("XGrammar fill: %s", ex.what());
    }
}

bool grammar_matcher_accept(GrammarMatcher *m, int32_t id) {
    if (id < 0 || id >= m->vocab) return false;
    try {
        return m->m.AcceptToken(id);
    } catch (const std::exception &ex) {
        DIE("XGrammar accept: %s", ex.what());
    }
}

void grammar_matcher_rollback(GrammarMatcher *m, int n) {
    try {
        m->m.Rollback(n);
    } catch (const std::exception &ex) {
        DIE("XGrammar rollback: %s", ex.what());
    }
}

bool grammar_matcher_terminated(const GrammarMatcher *m) { return m->m.IsTerminated(); }

bool grammar_matcher_completed(const GrammarMatcher *m) { return m->m.IsCompleted(); }
