// grammar_vocab.c: XGrammar's view of our tokenizer (grammar.h): each token's decoded bytes, so
// the matcher checks exactly the text the detokenizer prints, whatever the vocabulary type
// (byte-level BPE, SentencePiece with byte fallback); control tokens are special (never inside a
// grammar); the end-of-generation tokens are the stop tokens.
#include <stdlib.h>

#include "common/common.h"
#include "engine/sampling/grammar.h"
#include "engine/tokenizer/tokenizer.h"

int grammar_vocab_from_tokenizer(GrammarVocab **out, const Tokenizer *tok, int vocab, int compile_threads,
                                 char *err) {
    const char **pieces = xmalloc(sizeof(char *) * (size_t)vocab);
    size_t *lens = xmalloc(sizeof(size_t) * (size_t)vocab);
    bool *special = xmalloc(sizeof(bool) * (size_t)vocab);
    int32_t *stops = xmalloc(sizeof(int32_t) * (size_t)vocab);
    int n_stop = 0;
    for (int id = 0; id < vocab; id++) {
        pieces[id] = tok_piece(tok, id, &lens[id]);
        bool eog = tok_is_eog(tok, id);
        special[id] = eog || tok_is_special(tok, id);
        if (eog) stops[n_stop++] = id;
    }
    int rc = grammar_vocab_new(out, vocab, pieces, lens, special, stops, n_stop, compile_threads, err);
    free(pieces);
    free(lens);
    free(special);
    free(stops);
    return rc;
}
