/* checkpoint.c: saving and resuming training state (see checkpoint.h) over io/ckpt.h's format: host copies and
 * a background writer thread, the collective commit on rank 0, rotation, stop signals, and re-slicing the
 * optimizer shards on resume. */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ckpt.h"
#include "hfexport.h"
#include "safetensors.h"
#include "xr_fs.h"

/* The one process-wide piece of state a signal handler can touch. */
static volatile sig_atomic_t g_stop_signal;

static void tk_on_signal(int sig) {
    if (g_stop_signal) { /* the second one: die now, as the signal's default would */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    g_stop_signal = sig;
}

int tckpt_signalled(void) { return g_stop_signal != 0; }

typedef struct {
    CkptFile *files;
    int nfiles;
    int rc;
    XrErr err;
} TkResult;

struct TrainCkpt {
    Comm *c;
    int rank, R;
    CkptOpts o;
    CkptPlan p;
    char *output, *base_model, *config_json;
    /* host copies: the parameters (rank 0) and this rank's moments */
    float *h_params, *h_m, *h_v;
    size_t np, lo, hi;
    int writes_shard;
    /* the write in flight */
    pthread_t th;
    int pending; /* every rank agrees: a write was started and not committed yet */
    volatile int done;
    int64_t step, adamw_steps;
    Encoder *m; /* tensor names and shapes for the model file */
    TrainCounters tc;
    TkResult res;
    int64_t delay_ms; /* test hook: $XR_CKPT_TEST_STEP_SLEEP_MS per step end */
    double pause_s, write_s, read_s;
    int64_t write_bytes, read_bytes;
    int count;
};

TrainCkpt *tckpt_create(Comm *c, const CkptOpts *o, const CkptPlan *p) {
    TrainCkpt *k = xr_calloc(1, sizeof *k);
    k->c = c, k->rank = comm_rank(c), k->R = comm_size(c);
    k->o = *o, k->p = *p;
    k->output = o->output ? xr_strdup(o->output) : NULL;
    k->base_model = o->base_model ? xr_strdup(o->base_model) : NULL;
    k->config_json = xr_strdup(o->config_json ? o->config_json : "{}");
    const char *d = getenv("XR_CKPT_TEST_STEP_SLEEP_MS");
    k->delay_ms = d ? atoll(d) : 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = tk_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    return k;
}

static void tk_join(TrainCkpt *k) {
    if (k->pending == 1) {
        pthread_join(k->th, NULL);
        k->pending = 2; /* joined, not committed */
    }
}

void tckpt_free(TrainCkpt *k) {
    if (!k) return;
    tk_join(k);
    free(k->res.files);
    free(k->h_params), free(k->h_m), free(k->h_v);
    free(k->output), free(k->base_model), free(k->config_json);
    free(k);
}

double tckpt_pause_seconds(const TrainCkpt *k) { return k->pause_s; }
void tckpt_io_stats(const TrainCkpt *k, double *write_s, int64_t *write_bytes, double *read_s, int64_t *read_bytes) {
    *write_s = k->write_s, *write_bytes = k->write_bytes, *read_s = k->read_s, *read_bytes = k->read_bytes;
}
int tckpt_count(const TrainCkpt *k) { return k->count; }

static char *tk_shard_name(int r, int R) {
    char n[96];
    snprintf(n, sizeof n, "optimizer-%05d-of-%05d.safetensors", r, R);
    return xr_strdup(n);
}

/* ---- the writer (runs in the background thread, or inline) ---- */

static void tk_add_file(TkResult *r, const char *dir, const char *name) {
    if (r->rc) return;
    r->files = xr_realloc(r->files, sizeof *r->files * (size_t)(r->nfiles + 1));
    r->rc = ckpt_seal_file(dir, name, &r->files[r->nfiles], &r->err);
    if (r->rc == 0) r->nfiles++;
}

static void *tk_write(void *arg) {
    TrainCkpt *k = arg;
    TkResult *r = &k->res;
    double t0 = xr_now();
    char *stage = ckpt_staging_dir(k->output, k->step);
    if (k->rank == 0) {
        const ModelConfig *cfg = encoder_config(k->m);
        int n = encoder_num_tensors(k->m);
        StWriteTensor *t = xr_calloc((size_t)n, sizeof *t);
        for (int i = 0; i < n; i++) {
            const EncoderTensor *v = encoder_tensor(k->m, i);
            t[i].name = v->name;
            t[i].ndim = v->ndim;
            for (int q = 0; q < v->ndim; q++) t[i].shape[q] = v->shape[q];
            t[i].data = k->h_params + v->offset;
        }
        const char *arch = hf_seq_cls_architecture(cfg->model_type);
        r->rc = hf_write_model_files(stage, k->base_model, t, n, arch ? arch : cfg->architecture, cfg->num_labels,
                                     k->o.max_len, &r->err);
        free(t);
        /* seal what the model writer made (other ranks only add optimizer-* files) */
        DIR *d = r->rc ? NULL : opendir(stage);
        struct dirent *de;
        while (d && (de = readdir(d)))
            if (de->d_name[0] != '.' && strncmp(de->d_name, "optimizer-", 10) && !strstr(de->d_name, ".tmp"))
                tk_add_file(r, stage, de->d_name);
        if (d) closedir(d);
    }
    if (r->rc == 0 && k->writes_shard) {
        char *name = tk_shard_name(k->rank, k->R), *path = xr_path_join(stage, name);
        char off[32], cnt[32], steps[32];
        snprintf(off, sizeof off, "%zu", k->lo);
        snprintf(cnt, sizeof cnt, "%zu", k->hi - k->lo);
        snprintf(steps, sizeof steps, "%lld", (long long)k->adamw_steps);
        const char *meta[8] = {"format", "xrank-optimizer", "offset", off, "count", cnt, "adamw_steps", steps};
        StWriteTensor t[2] = {{"exp_avg", 1, {(int64_t)(k->hi - k->lo)}, k->h_m},
                              {"exp_avg_sq", 1, {(int64_t)(k->hi - k->lo)}, k->h_v}};
        r->rc = st_write(path, t, 2, meta, 4, 0, &r->err);
        if (r->rc == 0) tk_add_file(r, stage, name);
        free(name), free(path);
    }
    if (r->rc == 0) ckpt_test_phase("files", k->step);
    k->write_s += xr_now() - t0;
    for (int i = 0; i < r->nfiles; i++) k->write_bytes += (int64_t)r->files[i].size;
    free(stage);
    __atomic_store_n(&k->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Copy what this rank writes to host buffers, make the staging directory, start the writer. Collective. */
static int tk_start(TrainCkpt *k, Encoder *m, GradSync *g, const TrainCounters *tc, int inline_write, XrErr *e) {
    double t0 = xr_now();
    Backend *be = encoder_backend(m);
    k->m = m;
    k->np = (size_t)encoder_num_params(m);
    gsync_shard(g, &k->lo, &k->hi);
    /* ZeRO off: every rank holds the whole state; rank 0 writes it */
    k->writes_shard = !(k->lo == 0 && k->hi == k->np && k->R > 1 && k->rank != 0);
    k->step = tc->step;
    k->tc = *tc;
    AdamW *opt = gsync_optimizer(g);
    k->adamw_steps = adamw_steps(opt);
    if (k->rank == 0) {
        if (!k->h_params) k->h_params = xr_malloc(sizeof(float) * (k->np ? k->np : 1));
        ops_to_host(be, k->h_params, encoder_params(m), sizeof(float) * k->np);
    }
    if (k->writes_shard) {
        size_t len = k->hi - k->lo;
        if (!k->h_m) k->h_m = xr_malloc(sizeof(float) * (len ? len : 1)), k->h_v = xr_malloc(sizeof(float) * (len ? len : 1));
        ops_to_host(be, k->h_m, adamw_exp_avg(opt), sizeof(float) * len);
        ops_to_host(be, k->h_v, adamw_exp_avg_sq(opt), sizeof(float) * len);
    }
    int st = k->rank == 0 ? ckpt_stage_begin(k->output, k->step, e) : 0;
    if (comm_check(k->c, st, e)) return -1; /* also: nobody writes before the directory exists */
    free(k->res.files);
    memset(&k->res, 0, sizeof k->res);
    k->done = 0;
    if (inline_write || pthread_create(&k->th, NULL, tk_write, k)) {
        tk_write(k);
        k->pending = 2;
    } else {
        k->pending = 1;
    }
    k->pause_s += xr_now() - t0;
    return 0;
}

static char *tk_state_json(const TrainCounters *tc) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "log_loss", tc->log_loss);
    cJSON_AddNumberToObject(j, "log_weight", tc->log_w);
    cJSON_AddNumberToObject(j, "log_pairs", (double)tc->log_pairs);
    cJSON_AddNumberToObject(j, "log_real_tokens", (double)tc->log_real);
    cJSON_AddNumberToObject(j, "log_padded_tokens", (double)tc->log_pad);
    cJSON_AddNumberToObject(j, "log_from", (double)tc->log_from);
    cJSON_AddNumberToObject(j, "pairs", (double)tc->pairs);
    cJSON_AddNumberToObject(j, "real_tokens", (double)tc->real_tokens);
    cJSON_AddNumberToObject(j, "padded_tokens", (double)tc->padded_tokens);
    if (tc->best_step >= 0) {
        cJSON_AddNumberToObject(j, "best_value", tc->best_value);
        cJSON_AddNumberToObject(j, "best_step", (double)tc->best_step);
    }
    char *t = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return t;
}

/* Keep the newest save_total_limit checkpoints of the run directory, and the best one. */
static void tk_rotate(TrainCkpt *k) {
    if (k->o.save_total_limit <= 0) return;
    int64_t *steps;
    int n = ckpt_list(k->output, &steps), keep = k->o.save_total_limit;
    for (int i = 0; i < n - keep; i++) {
        if (k->tc.best_step >= 0 && steps[i] == k->tc.best_step) continue;
        XrErr e = {{0}};
        if (ckpt_remove(k->output, steps[i], &e)) fprintf(stderr, "xrank train: warning: %s\n", e.msg);
    }
    free(steps);
}

/* Collective: the write has finished on every rank; gather the file tables and shard bounds, write the
 * manifest, commit. */
static int tk_commit(TrainCkpt *k, XrErr *e) {
    tk_join(k);
    k->pending = 0;
    if (comm_check(k->c, k->res.rc, &k->res.err)) {
        *e = k->res.err;
        if (k->rank == 0) { /* a failed write (a full disk) leaves no staging directory taking the space */
            char *stage = ckpt_staging_dir(k->output, k->step);
            xr_remove_flat_dir(stage);
            free(stage);
        }
        return -1;
    }
    size_t nb = 0;
    char *all = comm_gather(k->c, k->res.files, sizeof(CkptFile) * (size_t)k->res.nfiles, 0, &nb, NULL);
    /* every writing rank's [lo, hi) (zero count: writes nothing) */
    int64_t b[2] = {(int64_t)k->lo, k->writes_shard ? (int64_t)(k->hi - k->lo) : 0};
    size_t bn = 0;
    char *bounds = comm_gather(k->c, b, sizeof b, 0, &bn, NULL);
    int st = 0;
    if (k->rank == 0) {
        CkptManifest mf = {0};
        mf.version = CKPT_VERSION;
        mf.step = k->step;
        mf.epoch = k->step / k->p.steps_per_epoch;
        mf.epoch_pos = (k->step % k->p.steps_per_epoch) * k->p.global_batch;
        mf.total_steps = k->p.total_steps, mf.steps_per_epoch = k->p.steps_per_epoch;
        mf.num_params = (int64_t)k->np, mf.adamw_steps = k->adamw_steps, mf.seed = k->p.seed;
        mf.world_size = k->R, mf.per_device_batch = k->p.per_device_batch, mf.accumulation = k->p.accumulation;
        mf.global_batch = k->p.global_batch;
        mf.shards = xr_calloc((size_t)k->R, sizeof *mf.shards);
        const int64_t *bb = (const int64_t *)bounds;
        for (int r = 0; r < k->R; r++) {
            if (bb[2 * r + 1] == 0 && !(r == 0 && k->np == 0)) continue;
            char *nm = tk_shard_name(r, k->R);
            CkptShard *sh = &mf.shards[mf.nshards++];
            snprintf(sh->file, sizeof sh->file, "%s", nm);
            sh->offset = bb[2 * r], sh->count = bb[2 * r + 1];
            free(nm);
        }
        mf.zero = mf.nshards > 1;
        mf.files = (CkptFile *)all;
        mf.nfiles = (int)(nb / sizeof(CkptFile));
        mf.state_json = tk_state_json(&k->tc);
        mf.config_json = k->config_json;
        st = ckpt_commit(k->output, &mf, e);
        free(mf.state_json), free(mf.shards);
        if (st == 0) tk_rotate(k);
    }
    free(all), free(bounds);
    if (comm_check(k->c, st, e)) return -1;
    k->count++;
    return 0;
}

int tckpt_step_end(TrainCkpt *k, Encoder *m, GradSync *g, const TrainCounters *tc, int *stop, XrErr *e) {
    *stop = 0;
    if (k->delay_ms > 0) {
        struct timespec ts = {k->delay_ms / 1000, (k->delay_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* one small all-reduce per step: a stop request anywhere, and whether every rank's writer is done */
    double v[2] = {g_stop_signal ? 1.0 : 0.0, k->pending == 1 ? (double)__atomic_load_n(&k->done, __ATOMIC_ACQUIRE)
                                                               : 1.0};
    comm_allreduce_sum_f64(k->c, v, 2);
    int stop_req = v[0] > 0, all_done = v[1] >= k->R;
    if (k->pending && (all_done || stop_req)) {
        double t0 = xr_now();
        if (tk_commit(k, e)) return -1;
        k->pause_s += xr_now() - t0;
    }
    int due = k->output && k->o.save_steps > 0 && tc->step % k->o.save_steps == 0;
    if (!k->output || !(due || stop_req)) return 0;
    if (k->pending) { /* the previous write is still going: wait for it */
        double t0 = xr_now();
        if (tk_commit(k, e)) return -1;
        k->pause_s += xr_now() - t0;
    }
    if (tk_start(k, m, g, tc, k->o.sync || stop_req, e)) return -1;
    if (stop_req) {
        double t0 = xr_now();
        if (tk_commit(k, e)) return -1;
        k->pause_s += xr_now() - t0;
        *stop = 1;
    }
    return 0;
}

int tckpt_finish(TrainCkpt *k, XrErr *e) {
    double v = k->pending ? 1 : 0;
    comm_allreduce_sum_f64(k->c, &v, 1);
    if (v > 0) return tk_commit(k, e);
    return 0;
}

/* ---- resume ---- */

static double tk_jnum(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

/* Copy tensor `name` of a safetensors file, elements [from, from + n), into dst (host). */
static int tk_read_slice(const SafeTensors *st, const char *name, size_t from, size_t n, float *dst, XrErr *e) {
    const StTensor *t = st_find(st, name);
    if (!t || t->dtype != ST_F32 || (size_t)st_numel(t) < from + n)
        return xr_errf(e, "%s: tensor %s missing, not F32 or too short for [%zu, %zu)", st->path, name, from, from + n);
    memcpy(dst, t->data + from * 4, n * 4);
    return 0;
}

int tckpt_resume(TrainCkpt *k, Encoder *m, GradSync *g, TrainCounters *tc, XrErr *e) {
    CkptManifest mf;
    double t0 = xr_now();
    int st = ckpt_open(k->o.resume, &mf, 0, e);
    Backend *be = encoder_backend(m);
    size_t np = (size_t)encoder_num_params(m), lo, hi;
    gsync_shard(g, &lo, &hi);
    if (st == 0) {
        if (mf.num_params != (int64_t)np)
            st = xr_errf(e, "%s holds %lld parameters, the model has %lld (another model)", k->o.resume,
                         (long long)mf.num_params, (long long)np);
        else if (mf.global_batch != k->p.global_batch)
            st = xr_errf(e, "%s was trained with a global batch of %lld, this run has %lld: keep "
                            "per-device batch x ranks x accumulation equal", k->o.resume, (long long)mf.global_batch,
                         (long long)k->p.global_batch);
        else if (mf.seed != k->p.seed)
            st = xr_errf(e, "%s was trained with --seed %llu, this run has %llu", k->o.resume,
                         (unsigned long long)mf.seed, (unsigned long long)k->p.seed);
        else if (mf.total_steps != k->p.total_steps || mf.steps_per_epoch != k->p.steps_per_epoch)
            st = xr_errf(e, "%s: %lld steps of %lld per epoch planned, this run plans %lld of %lld (same data, "
                            "epochs and --max-steps needed to continue)", k->o.resume, (long long)mf.total_steps,
                         (long long)mf.steps_per_epoch, (long long)k->p.total_steps, (long long)k->p.steps_per_epoch);
    }
    /* parameters: every rank reads the model file */
    if (st == 0) {
        char *mp = xr_path_join(k->o.resume, CKPT_MODEL);
        SafeTensors sf;
        st = st_open(&sf, mp, e);
        free(mp);
        if (st == 0) {
            k->read_bytes += (int64_t)sf.map_len;
            float *buf = xr_malloc(sizeof(float) * (np ? np : 1));
            for (int i = 0; i < encoder_num_tensors(m) && st == 0; i++) {
                const EncoderTensor *v = encoder_tensor(m, i);
                const StTensor *t = st_find(&sf, v->name);
                if (!t || (size_t)st_numel(t) != v->numel)
                    st = xr_errf(e, "%s: tensor %s missing or of another size", sf.path, v->name);
                else st = st_to_f32(t, buf + v->offset, e);
            }
            /* one writer where the node's ranks share the parameters (the barrier below orders it) */
            if (st == 0 && (!gsync_params_shared(g) || comm_node_leader(k->c)))
                ops_to_device(be, encoder_params(m), buf, sizeof(float) * np);
            free(buf);
            st_close(&sf);
        }
    }
    /* optimizer: this rank's [lo, hi) from every saved shard it overlaps */
    if (st == 0) {
        size_t len = hi - lo;
        float *hm = xr_malloc(sizeof(float) * (len ? len : 1)), *hv = xr_malloc(sizeof(float) * (len ? len : 1));
        for (int i = 0; i < mf.nshards && st == 0; i++) {
            size_t so = (size_t)mf.shards[i].offset, se = so + (size_t)mf.shards[i].count;
            size_t a = so > lo ? so : lo, z = se < hi ? se : hi;
            if (z <= a) continue;
            char *p = xr_path_join(k->o.resume, mf.shards[i].file);
            SafeTensors sf;
            st = st_open(&sf, p, e);
            free(p);
            if (st) break;
            k->read_bytes += (int64_t)(z - a) * 8;
            st = tk_read_slice(&sf, "exp_avg", a - so, z - a, hm + (a - lo), e);
            if (st == 0) st = tk_read_slice(&sf, "exp_avg_sq", a - so, z - a, hv + (a - lo), e);
            st_close(&sf);
        }
        AdamW *opt = gsync_optimizer(g);
        if (st == 0) {
            ops_to_device(be, adamw_exp_avg(opt), hm, sizeof(float) * len);
            ops_to_device(be, adamw_exp_avg_sq(opt), hv, sizeof(float) * len);
            adamw_set_steps(opt, mf.adamw_steps);
        }
        free(hm), free(hv);
    }
    if (st == 0) {
        cJSON *j = cJSON_Parse(mf.state_json);
        memset(tc, 0, sizeof *tc);
        tc->step = mf.step;
        tc->log_loss = tk_jnum(j, "log_loss", 0);
        tc->log_w = tk_jnum(j, "log_weight", 0);
        tc->log_pairs = (int64_t)tk_jnum(j, "log_pairs", 0);
        tc->log_real = (int64_t)tk_jnum(j, "log_real_tokens", 0);
        tc->log_pad = (int64_t)tk_jnum(j, "log_padded_tokens", 0);
        tc->log_from = (int64_t)tk_jnum(j, "log_from", (double)mf.step);
        tc->pairs = (int64_t)tk_jnum(j, "pairs", 0);
        tc->real_tokens = (int64_t)tk_jnum(j, "real_tokens", 0);
        tc->padded_tokens = (int64_t)tk_jnum(j, "padded_tokens", 0);
        tc->best_step = (int64_t)tk_jnum(j, "best_step", -1);
        tc->best_value = tk_jnum(j, "best_value", 0);
        cJSON_Delete(j);
    }
    ckpt_manifest_free(&mf);
    k->read_s = xr_now() - t0;
    if (comm_check(k->c, st, e)) return -1;
    encoder_weights_updated(m); /* bf16: the working copy follows the restored master weights (after every write) */
    return 0;
}
