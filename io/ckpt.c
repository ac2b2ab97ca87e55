/* ckpt.c: the checkpoint directory format of ckpt.h: staging, sealing files (fsync + crc32), the manifest in
 * JSON (cJSON), the commit by rename with directory fsyncs, `latest`, verification, fallback and rotation. */
#define _GNU_SOURCE
#include "ckpt.h"
#include "xr_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cjson/cJSON.h>

void ckpt_test_phase(const char *phase, int64_t step) {
    const char *k = getenv("XR_CKPT_KILL_AT");
    if (!k) return;
    char want[64];
    snprintf(want, sizeof want, "%s:%lld", phase, (long long)step);
    if (!strcmp(k, phase) || !strcmp(k, want)) {
        fprintf(stderr, "xrank: XR_CKPT_KILL_AT=%s: killing myself\n", k);
        fflush(stderr);
        raise(SIGKILL);
    }
}

void ckpt_manifest_free(CkptManifest *m) {
    free(m->shards), free(m->files), free(m->state_json), free(m->config_json);
    memset(m, 0, sizeof *m);
}

char *ckpt_dir(const char *out, int64_t step) {
    char n[64];
    snprintf(n, sizeof n, "checkpoint-%lld", (long long)step);
    return xr_path_join(out, n);
}

char *ckpt_staging_dir(const char *out, int64_t step) {
    char n[64];
    snprintf(n, sizeof n, "checkpoint-%lld.tmp", (long long)step);
    return xr_path_join(out, n);
}

int ckpt_stage_begin(const char *out, int64_t step, XrErr *e) {
    char *s = ckpt_staging_dir(out, step);
    xr_remove_flat_dir(s);
    int rc = 0;
    if (mkdir(s, 0755)) rc = xr_errf(e, "cannot create %s: %s", s, strerror(errno));
    free(s);
    return rc;
}

/* crc32 and size of a file read in 4 MiB pieces; fsync when sync != 0. */
static int ckpt_crc_file(const char *path, uint64_t *size, uint32_t *crc, int sync, XrErr *e) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return xr_errf(e, "%s: missing: %s", path, strerror(errno));
    enum { CHUNK = 4 << 20 };
    unsigned char *buf = xr_malloc(CHUNK);
    uLong c = crc32(0L, Z_NULL, 0);
    uint64_t n = 0;
    int rc = 0;
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            rc = xr_errf(e, "%s: read failed at byte %llu: %s", path, (unsigned long long)n, strerror(errno));
            break;
        }
        if (r == 0) break;
        c = crc32(c, buf, (uInt)r);
        n += (uint64_t)r;
    }
    if (rc == 0 && sync && fsync(fd)) rc = xr_errf(e, "%s: fsync failed: %s", path, strerror(errno));
    close(fd);
    free(buf);
    *size = n;
    *crc = (uint32_t)c;
    return rc;
}

int ckpt_seal_file(const char *dir, const char *name, CkptFile *f, XrErr *e) {
    if (strlen(name) >= sizeof f->name) return xr_errf(e, "checkpoint file name too long: %s", name);
    char *p = xr_path_join(dir, name);
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    int rc = ckpt_crc_file(p, &f->size, &f->crc32, 1, e);
    free(p);
    return rc;
}

/* ---- manifest ---- */

static cJSON *ckpt_json_object(const char *text) {
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        j = cJSON_CreateObject();
    }
    return j;
}

static char *ckpt_manifest_text(const CkptManifest *m) {
    cJSON *j = cJSON_CreateObject();
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)m->seed);
    cJSON_AddStringToObject(j, "format", "xrank-checkpoint");
    cJSON_AddNumberToObject(j, "version", CKPT_VERSION);
    cJSON_AddNumberToObject(j, "step", (double)m->step);
    cJSON_AddNumberToObject(j, "epoch", (double)m->epoch);
    cJSON_AddNumberToObject(j, "epoch_position", (double)m->epoch_pos);
    cJSON_AddNumberToObject(j, "total_steps", (double)m->total_steps);
    cJSON_AddNumberToObject(j, "steps_per_epoch", (double)m->steps_per_epoch);
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "world_size", m->world_size);
    cJSON_AddNumberToObject(j, "per_device_batch", m->per_device_batch);
    cJSON_AddNumberToObject(j, "accumulation", m->accumulation);
    cJSON_AddNumberToObject(j, "global_batch", (double)m->global_batch);
    cJSON_AddNumberToObject(j, "num_params", (double)m->num_params);
    cJSON *opt = cJSON_AddObjectToObject(j, "optimizer");
    cJSON_AddStringToObject(opt, "type", "adamw");
    cJSON_AddNumberToObject(opt, "steps", (double)m->adamw_steps);
    cJSON_AddNumberToObject(opt, "zero", m->zero);
    cJSON *sh = cJSON_AddArrayToObject(opt, "shards");
    for (int i = 0; i < m->nshards; i++) {
        cJSON *s = cJSON_CreateObject();
        cJSON_AddStringToObject(s, "file", m->shards[i].file);
        cJSON_AddNumberToObject(s, "offset", (double)m->shards[i].offset);
        cJSON_AddNumberToObject(s, "count", (double)m->shards[i].count);
        cJSON_AddItemToArray(sh, s);
    }
    cJSON_AddItemToObject(j, "state", ckpt_json_object(m->state_json));
    cJSON_AddItemToObject(j, "config", ckpt_json_object(m->config_json));
    cJSON *fs = cJSON_AddArrayToObject(j, "files");
    for (int i = 0; i < m->nfiles; i++) {
        cJSON *f = cJSON_CreateObject();
        cJSON_AddStringToObject(f, "name", m->files[i].name);
        cJSON_AddNumberToObject(f, "size", (double)m->files[i].size);
        char crc[16];
        snprintf(crc, sizeof crc, "%08x", m->files[i].crc32);
        cJSON_AddStringToObject(f, "crc32", crc);
        cJSON_AddItemToArray(fs, f);
    }
    char *t = cJSON_Print(j);
    cJSON_Delete(j);
    return t;
}

static int ckpt_write_synced(const char *path, const char *text, XrErr *e) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return xr_errf(e, "cannot create %s: %s", path, strerror(errno));
    size_t n = strlen(text);
    const char *p = text;
    int rc = 0;
    while (n && rc == 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) rc = xr_errf(e, "cannot write %s: %s", path, strerror(errno));
        else p += w, n -= (size_t)w;
    }
    if (rc == 0 && fsync(fd)) rc = xr_errf(e, "%s: fsync failed: %s", path, strerror(errno));
    if (close(fd) && rc == 0) rc = xr_errf(e, "cannot write %s: %s", path, strerror(errno));
    return rc;
}

int ckpt_commit(const char *out, const CkptManifest *m, XrErr *e) {
    char *stage = ckpt_staging_dir(out, m->step), *dir = ckpt_dir(out, m->step);
    char *mp = xr_path_join(stage, CKPT_MANIFEST);
    char *text = ckpt_manifest_text(m);
    size_t tl = strlen(text);
    text = xr_realloc(text, tl + 2);
    text[tl] = '\n', text[tl + 1] = 0;
    int rc = ckpt_write_synced(mp, text, e);
    free(text), free(mp);
    if (rc == 0) {
        (void)xr_fsync_path(stage);
        ckpt_test_phase("manifest", m->step);
        struct stat sb;
        char *old = NULL;
        if (stat(dir, &sb) == 0) { /* a checkpoint of this step already (a rerun from an earlier one) */
            size_t n = strlen(dir) + 16;
            old = xr_malloc(n);
            snprintf(old, n, "%s.old", dir);
            xr_remove_flat_dir(old);
            if (rename(dir, old)) rc = xr_errf(e, "cannot move %s aside: %s", dir, strerror(errno));
        }
        if (rc == 0 && rename(stage, dir)) rc = xr_errf(e, "cannot rename %s to %s: %s", stage, dir, strerror(errno));
        if (rc == 0) (void)xr_fsync_path(out);
        if (old) xr_remove_flat_dir(old), free(old);
    }
    if (rc == 0) {
        ckpt_test_phase("rename", m->step);
        char *lp = xr_path_join(out, CKPT_LATEST), *lt = xr_path_join(out, CKPT_LATEST ".tmp");
        char line[64];
        snprintf(line, sizeof line, "checkpoint-%lld\n", (long long)m->step);
        rc = ckpt_write_synced(lt, line, e);
        if (rc == 0) ckpt_test_phase("latest", m->step);
        if (rc == 0 && rename(lt, lp)) rc = xr_errf(e, "cannot rename %s to %s: %s", lt, lp, strerror(errno));
        if (rc == 0) (void)xr_fsync_path(out);
        free(lp), free(lt);
    }
    free(stage), free(dir);
    return rc;
}

/* ---- reading ---- */

static int64_t ckpt_jint(const cJSON *o, const char *k, int *ok) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    /* a number outside int64 (1e67 in a damaged manifest) must not reach the cast: undefined behaviour */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= -9.2e18 && v->valuedouble <= 9.2e18)) {
        *ok = 0;
        return 0;
    }
    return (int64_t)v->valuedouble;
}

int ckpt_is_checkpoint(const char *dir) {
    char *p = xr_path_join(dir, CKPT_MANIFEST);
    int r = xr_file_exists(p);
    free(p);
    return r;
}

int ckpt_open(const char *dir, CkptManifest *m, int verify, XrErr *e) {
    memset(m, 0, sizeof *m);
    char *mp = xr_path_join(dir, CKPT_MANIFEST);
    size_t len;
    char *text = xr_read_file(mp, &len, e);
    if (!text) {
        int rc = xr_errf(e, "%s: not a complete checkpoint (no readable %s)", dir, CKPT_MANIFEST);
        free(mp);
        return rc;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    int ok = 1, rc = 0;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    if (!cJSON_IsObject(j) || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, "xrank-checkpoint")) {
        rc = xr_errf(e, "%s: not an xrank checkpoint manifest", mp);
        goto done;
    }
    m->version = (int)ckpt_jint(j, "version", &ok);
    if (!ok || m->version != CKPT_VERSION) {
        rc = xr_errf(e, "%s: checkpoint format version %d, this xrank reads version %d (use the xrank that wrote it)",
                     mp, m->version, CKPT_VERSION);
        goto done;
    }
    m->step = ckpt_jint(j, "step", &ok);
    m->epoch = ckpt_jint(j, "epoch", &ok);
    m->epoch_pos = ckpt_jint(j, "epoch_position", &ok);
    m->total_steps = ckpt_jint(j, "total_steps", &ok);
    m->steps_per_epoch = ckpt_jint(j, "steps_per_epoch", &ok);
    m->world_size = (int)ckpt_jint(j, "world_size", &ok);
    m->per_device_batch = (int)ckpt_jint(j, "per_device_batch", &ok);
    m->accumulation = (int)ckpt_jint(j, "accumulation", &ok);
    m->global_batch = ckpt_jint(j, "global_batch", &ok);
    m->num_params = ckpt_jint(j, "num_params", &ok);
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(j, "seed");
    if (cJSON_IsString(seed)) m->seed = strtoull(seed->valuestring, NULL, 10);
    else ok = 0;
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(j, "optimizer");
    m->adamw_steps = ckpt_jint(opt, "steps", &ok);
    m->zero = (int)ckpt_jint(opt, "zero", &ok);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(opt, "shards"), *it;
    m->nshards = cJSON_GetArraySize(sh);
    m->shards = xr_calloc((size_t)(m->nshards + 1), sizeof *m->shards);
    int i = 0;
    cJSON_ArrayForEach(it, sh) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "file");
        if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof m->shards[i].file) ok = 0;
        else snprintf(m->shards[i].file, sizeof m->shards[i].file, "%s", f->valuestring);
        m->shards[i].offset = ckpt_jint(it, "offset", &ok);
        m->shards[i].count = ckpt_jint(it, "count", &ok);
        i++;
    }
    const cJSON *fs = cJSON_GetObjectItemCaseSensitive(j, "files");
    m->nfiles = cJSON_GetArraySize(fs);
    m->files = xr_calloc((size_t)(m->nfiles + 1), sizeof *m->files);
    i = 0;
    cJSON_ArrayForEach(it, fs) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(it, "name"), *c = cJSON_GetObjectItemCaseSensitive(it, "crc32");
        if (!cJSON_IsString(f) || strlen(f->valuestring) >= sizeof m->files[i].name || strchr(f->valuestring, '/') ||
            !cJSON_IsString(c))
            ok = 0;
        else {
            snprintf(m->files[i].name, sizeof m->files[i].name, "%s", f->valuestring);
            m->files[i].crc32 = (uint32_t)strtoul(c->valuestring, NULL, 16);
        }
        m->files[i].size = (uint64_t)ckpt_jint(it, "size", &ok);
        i++;
    }
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "state"), *cf = cJSON_GetObjectItemCaseSensitive(j, "config");
    m->state_json = cJSON_PrintUnformatted(st);
    m->config_json = cJSON_PrintUnformatted(cf);
    if (!ok || !m->state_json || !m->config_json) {
        rc = xr_errf(e, "%s: a required field is missing or malformed", mp);
        goto done;
    }
    /* the shards must tile [0, num_params) and be in the file table */
    int64_t at = 0;
    for (i = 0; i < m->nshards && rc == 0; i++) {
        if (m->shards[i].offset != at || m->shards[i].count < 0)
            rc = xr_errf(e, "%s: optimizer shard %s starts at %lld, expected %lld", mp, m->shards[i].file,
                         (long long)m->shards[i].offset, (long long)at);
        at += m->shards[i].count;
        int found = 0;
        for (int k = 0; k < m->nfiles; k++) found |= !strcmp(m->files[k].name, m->shards[i].file);
        if (rc == 0 && !found) rc = xr_errf(e, "%s: optimizer shard %s is not in the file table", mp, m->shards[i].file);
    }
    if (rc == 0 && at != m->num_params)
        rc = xr_errf(e, "%s: optimizer shards cover %lld of %lld parameters", mp, (long long)at, (long long)m->num_params);
    for (i = 0; i < m->nfiles && rc == 0; i++) {
        char *p = xr_path_join(dir, m->files[i].name);
        struct stat sb;
        uint64_t size;
        uint32_t crc;
        if (stat(p, &sb)) rc = xr_errf(e, "%s: missing (listed in %s)", p, mp);
        else if ((uint64_t)sb.st_size != m->files[i].size)
            rc = xr_errf(e, "%s: %llu bytes, the manifest says %llu (truncated or replaced)", p,
                         (unsigned long long)sb.st_size, (unsigned long long)m->files[i].size);
        else if (verify && ckpt_crc_file(p, &size, &crc, 0, e)) rc = -1;
        else if (verify && crc != m->files[i].crc32)
            rc = xr_errf(e, "%s: crc32 %08x, the manifest says %08x (corrupt)", p, crc, m->files[i].crc32);
        free(p);
    }
done:
    cJSON_Delete(j);
    free(mp);
    if (rc) ckpt_manifest_free(m);
    return rc;
}

/* ---- listing, resolving, removing ---- */

static int ckpt_cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int ckpt_list(const char *out, int64_t **steps) {
    *steps = NULL;
    DIR *d = opendir(out);
    if (!d) return 0;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long s;
        char tail[8];
        if (sscanf(de->d_name, "checkpoint-%lld%7s", &s, tail) != 1 || s < 0) continue;
        char want[64];
        snprintf(want, sizeof want, "checkpoint-%lld", s);
        if (strcmp(want, de->d_name)) continue;
        char *p = xr_path_join(out, de->d_name);
        int is = ckpt_is_checkpoint(p);
        free(p);
        if (!is) continue;
        if (n == cap) *steps = xr_realloc(*steps, sizeof(int64_t) * (size_t)(cap = cap ? cap * 2 : 16));
        (*steps)[n++] = s;
    }
    closedir(d);
    if (n) qsort(*steps, (size_t)n, sizeof(int64_t), ckpt_cmp_i64);
    return n;
}

char *ckpt_resolve(const char *spec, const char *out, char *note, size_t note_len, XrErr *e) {
    if (note_len) note[0] = 0;
    CkptManifest m;
    if (strcmp(spec, "latest")) {
        if (ckpt_open(spec, &m, 1, e)) return NULL;
        ckpt_manifest_free(&m);
        return xr_strdup(spec);
    }
    char *lp = xr_path_join(out, CKPT_LATEST);
    size_t len;
    XrErr le = {{0}};
    char *name = xr_read_file(lp, &len, &le), *why = NULL;
    if (name) {
        while (len && (name[len - 1] == '\n' || name[len - 1] == ' ')) name[--len] = 0;
        char *dir = strchr(name, '/') || !name[0] ? NULL : xr_path_join(out, name);
        if (dir && ckpt_open(dir, &m, 1, &le) == 0) {
            ckpt_manifest_free(&m);
            free(name), free(lp);
            return dir;
        }
        if (!dir) xr_errf(&le, "%s does not name a checkpoint", lp);
        free(dir);
        why = xr_strdup(le.msg);
    } else {
        why = xr_strdup(le.msg);
    }
    free(name);
    int64_t *steps;
    int n = ckpt_list(out, &steps);
    char *found = NULL;
    for (int i = n - 1; i >= 0 && !found; i--) {
        char *dir = ckpt_dir(out, steps[i]);
        XrErr ce = {{0}};
        if (ckpt_open(dir, &m, 1, &ce) == 0) {
            ckpt_manifest_free(&m);
            found = dir;
        } else {
            free(dir);
        }
    }
    if (found) snprintf(note, note_len, "%s is unusable (%s): resuming from %s, the newest complete checkpoint", lp, why, found);
    else xr_errf(e, "--resume latest: no complete checkpoint under %s (%s)", out, why);
    free(why), free(steps), free(lp);
    return found;
}

int ckpt_remove(const char *out, int64_t step, XrErr *e) {
    char *dir = ckpt_dir(out, step);
    size_t n = strlen(dir) + 16;
    char *del = xr_malloc(n);
    snprintf(del, n, "%s.del", dir);
    xr_remove_flat_dir(del);
    int rc = 0;
    if (rename(dir, del)) rc = xr_errf(e, "cannot remove %s: %s", dir, strerror(errno));
    else (void)xr_fsync_path(out), xr_remove_flat_dir(del);
    free(dir), free(del);
    return rc;
}
