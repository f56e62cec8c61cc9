// tp.h: the rank threads of CPU tensor parallelism (DESIGN.md §6, issue 8).
//
// A TpGroup runs one forward step on N ranks at once, each rank a Model holding its share of the
// weights (model_load_shard) and a KVCache holding only its KV heads, all with the same block
// ids (one scheduler, one block pool, one block table serve every rank). Rank 0 runs on the
// thread that calls tp_step (the engine thread); ranks 1..N-1 are persistent threads started by
// tp_start, each of which calls k_init for itself (the kernels' scratch and OpenMP team are per
// thread) and then sleeps until a step arrives. In a step every rank first applies the
// copy-on-write block copies to its own cache, then calls model_forward with the same Batch; the
// ranks meet in the model's all-reduces (kernels/comm.h) and rank 0 gets the logits. tp_step
// returns once every rank is done with the Batch, so the caller may rebuild it.
//
// Nothing here allocates after tp_start. At size 1 no thread is started and tp_step is a plain
// call.
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/kv_cache.h"
#include "engine/model/model.h"
#include "scheduler/scheduler.h"

typedef struct TpGroup TpGroup;

typedef struct {
    TpGroup *g;
    int rank;
} TpRank;

struct TpGroup {
    int size;
    Model *models;             // [size], not owned
    KVCache *kv;               // [size], not owned
    int threads_per_rank;      // k_init's thread count on every rank
    pthread_t *threads;        // [size]; [0] unused (rank 0 is the caller)
    TpRank *ranks;             // [size] the threads' arguments
    int n_started;             // threads to join

    pthread_mutex_t mu;
    pthread_cond_t go;         // a step (or stop) for ranks 1..N-1
    pthread_cond_t done;       // ranks 1..N-1 finished a step / their k_init
    uint64_t step;             // steps posted; a rank runs when it has seen fewer
    int n_done, n_ready;
    bool stop;
    // the step being run (valid while ranks run it)
    const Batch *b;
    const SchedBlockCopy *copies;
    int n_copies;
};

// Starts ranks 1..size-1 and waits until each has sized its kernels' scratch. models[r] and kv[r]
// must stay put until tp_stop.
void tp_start(TpGroup *g, Model *models, KVCache *kv, int size, int threads_per_rank);
// Stops and joins the rank threads (each frees its scratch). Accepts a zeroed group.
void tp_stop(TpGroup *g);
// k_init for rank `rank` (its threads, its model's rows and widest input): rank 0's caller
// calls it on the thread that will call tp_step.
void tp_kernels_init(const TpGroup *g, int rank);
// One step on every rank: the block copies on each rank's cache, then model_forward(b). logits
// receive rank 0's [b->n_sample, vocab].
void tp_step(TpGroup *g, const SchedBlockCopy *copies, int n_copies, const Batch *b, float *logits);
