/* args.c: the shared flag parser (see args.h). The table is the single source of the flags, their checks
 * and their help text; a --config file goes through the same checks as the command line. */
#include "args.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A flag by name, - and _ being the same character (--learning_rate is --learning-rate). */
static int args_find(const ArgSpec *spec, int n, const char *name, size_t len) {
    for (int i = 0; i < n; i++) {
        const char *f = spec[i].name;
        if (strlen(f) != len) continue;
        size_t k = 0;
        while (k < len && (f[k] == name[k] || (f[k] == '-' && name[k] == '_'))) k++;
        if (k == len) return i;
    }
    return -1;
}

/* Edit distance (insertions, deletions, substitutions; _ = -), for "did you mean". */
static int args_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 63 || m > 63) return 99;
    int row[64];
    for (size_t j = 0; j <= m; j++) row[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int same = a[i - 1] == b[j - 1] || (a[i - 1] == '_' && b[j - 1] == '-') || (a[i - 1] == '-' && b[j - 1] == '_');
            int best = diag + !same;
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = row[j];
            row[j] = best;
        }
    }
    return row[m];
}

/* The closest flag of spec (and of the other commands' tables) to a misspelt key, or NULL when none is close. */
static const char *args_closest(const Args *a, const char *key, int own_only) {
    const char *best = NULL;
    int bd = (int)strlen(key) / 3 + 1;
    if (bd > 3) bd = 3;
    for (int t = -1; t < (own_only ? 0 : a->nall); t++) {
        const ArgSpec *sp = t < 0 ? a->spec : a->all[t].spec;
        int n = t < 0 ? a->n : a->all[t].n;
        for (int i = 0; i < n; i++) {
            int d = args_distance(key, sp[i].name);
            if (d < bd) bd = d, best = sp[i].name;
        }
    }
    return best;
}

/* " (did you mean --x? xrank cmd --help lists the flags)"; a config key is quoted instead: "x". */
static void args_hint(const Args *a, const char *key, int flag, int own_only, char *buf, size_t n) {
    const char *c = args_closest(a, key, own_only);
    if (c && flag) snprintf(buf, n, " (did you mean --%s? xrank %s --help lists the flags)", c, a->cmd);
    else if (c) snprintf(buf, n, " (did you mean \"%s\"? xrank %s --help lists the flags)", c, a->cmd);
    else snprintf(buf, n, " (xrank %s --help lists the flags)", a->cmd);
}

static int args_parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int args_parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int args_parse_boolean(const char *s, int *out) {
    if (!strcmp(s, "1") || !strcmp(s, "true")) *out = 1;
    else if (!strcmp(s, "0") || !strcmp(s, "false")) *out = 0;
    else return -1;
    return 0;
}

/* Check a value against its spec; `where` says where it came from for the message. */
static int args_check(const ArgSpec *sp, const char *v, const char *where, XrErr *e) {
    long l;
    double d;
    int b;
    switch (sp->type) {
    case ARG_STR:
        return 0;
    case ARG_INT:
        if (args_parse_long(v, &l)) return xr_errf(e, "%s--%s: expected an integer, got '%s'", where, sp->name, v);
        if (l < sp->min) return xr_errf(e, "%s--%s: must be at least %ld, got %ld", where, sp->name, sp->min, l);
        return 0;
    case ARG_FLOAT:
        if (args_parse_double(v, &d)) return xr_errf(e, "%s--%s: expected a number, got '%s'", where, sp->name, v);
        return 0;
    case ARG_BOOL:
    case ARG_SWITCH:
        if (args_parse_boolean(v, &b)) return xr_errf(e, "%s--%s: expected 0 or 1, got '%s'", where, sp->name, v);
        return 0;
    case ARG_CHOICE: {
        size_t n = strlen(v);
        for (const char *c = sp->choices; *c;) {
            const char *bar = strchr(c, '|');
            size_t k = bar ? (size_t)(bar - c) : strlen(c);
            if (k == n && !strncmp(c, v, n)) return 0;
            c += k + (bar ? 1 : 0);
        }
        return xr_errf(e, "%s--%s: expected one of %s, got '%s'", where, sp->name, sp->choices, v);
    }
    }
    return 0;
}

static void args_set(Args *a, int i, const char *v, ArgSource from) {
    free(a->val[i]);
    a->val[i] = xr_strdup(v);
    a->from[i] = from;
}

/* Config keys are flag names, in either spelling (args_find). */
static int args_find_key(const Args *a, const char *key) { return args_find(a->spec, a->n, key, strlen(key)); }

static int args_apply_config_value(Args *a, int i, const cJSON *v, const char *path, XrErr *e) {
    char buf[64], where[1100];
    const char *text;
    snprintf(where, sizeof where, "%s: key \"%s\": ", path, a->spec[i].name);
    if (cJSON_IsString(v)) {
        text = v->valuestring;
    } else if (cJSON_IsBool(v)) {
        text = cJSON_IsTrue(v) ? "1" : "0";
    } else if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 1e15) snprintf(buf, sizeof buf, "%.0f", d);
        else { /* the shortest text that reads back as the same double: 0.1 stays 0.1 */
            for (int prec = 15; prec <= 17; prec++) {
                snprintf(buf, sizeof buf, "%.*g", prec, d);
                if (strtod(buf, NULL) == d) break;
            }
        }
        text = buf;
    } else {
        return xr_errf(e, "%sexpected a string, number or boolean", where);
    }
    if (args_check(&a->spec[i], text, where, e)) return -1;
    if (a->from[i] != ARG_FROM_CMDLINE) args_set(a, i, text, ARG_FROM_CONFIG);
    return 0;
}

/* Top-level keys that name one of this command's flags apply; others belong to other commands of the
 * pipeline and are skipped. An object under the command's own name ("score": {...}) applies after them
 * and must hold only this command's flags (a typo there is an error, not silently ignored). */
/* Is key a flag of another command (a shared config file), or the name of a command's section? */
static int args_other_key(const Args *a, const char *key, int *is_section) {
    *is_section = 0;
    for (int t = 0; t < a->nall; t++) {
        if (!strcmp(a->all[t].cmd, key)) {
            *is_section = 1;
            return 1;
        }
        if (args_find(a->all[t].spec, a->all[t].n, key, strlen(key)) >= 0) return 1;
    }
    return 0;
}

static int args_apply_config(Args *a, const char *path, XrErr *e) {
    size_t len;
    XrErr re;
    char *text = xr_read_file(path, &len, &re);
    if (!text) return xr_errf(e, "--config %s", re.msg);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t off = end ? (size_t)(end - text) : 0, line = 1;
        for (size_t k = 0; k < off && k < len; k++) line += text[k] == '\n';
        free(text);
        return xr_errf(e, "%s:%zu: invalid JSON (near byte %zu)", path, line, off);
    }
    free(text);
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = xr_errf(e, "%s: a config file must hold a JSON object", path);
        goto done;
    }
    const cJSON *it;
    char hint[256];
    cJSON_ArrayForEach(it, root) {
        int section = !strcmp(it->string, a->cmd), i = args_find_key(a, it->string);
        if (section && cJSON_IsObject(it)) continue; /* this command's section: below */
        if (i < 0) {
            if (section || args_other_key(a, it->string, &section)) {
                if (section && !cJSON_IsObject(it)) {
                    rc = xr_errf(e, "%s: key \"%s\" names a command: it must hold an object of that command's flags",
                                 path, it->string);
                    goto done;
                }
                continue;
            }
            args_hint(a, it->string, 0, 0, hint, sizeof hint);
            rc = xr_errf(e, "%s: unknown key \"%s\"%s", path, it->string, hint);
            goto done;
        }
        if (!strcmp(a->spec[i].name, "config")) {
            rc = xr_errf(e, "%s: key \"config\": a config file cannot name another one", path);
            goto done;
        }
        if ((rc = args_apply_config_value(a, i, it, path, e))) goto done;
    }
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, a->cmd);
    if (cJSON_IsObject(sec)) {
        cJSON_ArrayForEach(it, sec) {
            int i = args_find_key(a, it->string);
            if (i < 0 || !strcmp(a->spec[i].name, "config")) {
                args_hint(a, it->string, 0, 1, hint, sizeof hint);
                rc = xr_errf(e, "%s: section \"%s\": unknown key \"%s\"%s", path, a->cmd, it->string, hint);
                goto done;
            }
            if ((rc = args_apply_config_value(a, i, it, path, e))) goto done;
        }
    }
done:
    cJSON_Delete(root);
    return rc;
}

int args_parse(Args *a, const char *cmd, const ArgSpec *spec, int nspec, int max_positional, const ArgTable *all,
               int nall, int argc, char **argv, XrErr *e) {
    memset(a, 0, sizeof *a);
    a->cmd = cmd;
    a->all = all;
    a->nall = nall;
    a->spec = spec;
    a->n = nspec;
    a->val = xr_calloc((size_t)nspec, sizeof(char *));
    a->from = xr_calloc((size_t)nspec, sizeof(ArgSource));
    a->positional = xr_calloc((size_t)argc + 1, sizeof(char *));
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0 || arg[2] == 0) {
            if (a->npositional >= max_positional)
                return xr_errf(e, "unexpected argument '%s' (flags start with --; xrank %s --help lists them)", arg,
                               cmd);
            a->positional[a->npositional++] = argv[i];
            continue;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int k = args_find(spec, nspec, name, len);
        if (k < 0) {
            char key[128], hint[256];
            snprintf(key, sizeof key, "%.*s", (int)len, name);
            args_hint(a, key, 1, 1, hint, sizeof hint);
            return xr_errf(e, "unknown flag '--%s'%s", key, hint);
        }
        const char *v;
        if (spec[k].type == ARG_SWITCH) {
            v = eq ? eq + 1 : "1";
        } else if (eq) {
            v = eq + 1;
        } else {
            if (i + 1 >= argc) return xr_errf(e, "flag --%s needs a value (%s)", spec[k].name, spec[k].meta);
            v = argv[++i];
        }
        if (args_check(&spec[k], v, "", e)) return -1;
        args_set(a, k, v, ARG_FROM_CMDLINE);
    }
    int ci = args_find(spec, nspec, "config", 6);
    if (ci >= 0 && a->val[ci] && args_apply_config(a, a->val[ci], e)) return -1;
    for (int i = 0; i < nspec; i++)
        if (!a->val[i] && spec[i].def) {
            a->val[i] = xr_strdup(spec[i].def);
            a->from[i] = ARG_FROM_DEFAULT;
        }
    return 0;
}

void args_free(Args *a) {
    for (int i = 0; i < a->n; i++) free(a->val[i]);
    free(a->val);
    free(a->from);
    free(a->positional);
    memset(a, 0, sizeof *a);
}

void args_print_config(FILE *f, const Args *a) {
    const char *file = NULL;
    for (int i = 0; i < a->n; i++)
        if (!strcmp(a->spec[i].name, "config")) file = a->val[i];
    fprintf(f, "# xrank %s: resolved flags%s%s\n", a->cmd, file ? " with --config " : "", file ? file : "");
    fprintf(f, "# %-30s %-40s %s\n", "flag", "value", "from");
    for (int i = 0; i < a->n; i++) {
        const char *name = a->spec[i].name;
        if (!strcmp(name, "config") || !strcmp(name, "print-config")) continue;
        const char *v = a->val[i];
        if (a->spec[i].type == ARG_SWITCH && v) v = args_bool(a, name) ? "true" : "false";
        const char *from = a->from[i] == ARG_FROM_CMDLINE  ? "command line"
                           : a->from[i] == ARG_FROM_CONFIG ? file
                           : v                             ? "default"
                                                           : "unset";
        if (!v && a->spec[i].type == ARG_SWITCH) v = "false", from = "default";
        fprintf(f, "  %-30s %-40s %s\n", name, v ? v : "-", from);
    }
}

/* Print text wrapped at word boundaries to fit `width` columns, continuation lines indented by `indent`. */
static void args_wrap(FILE *f, const char *text, int col, int indent, int width) {
    const char *p = text;
    while (*p) {
        while (*p == ' ') p++;
        size_t w = strcspn(p, " ");
        if (col > indent && col + 1 + (int)w > width) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, w, f);
        col += (int)w;
        p += w;
    }
    fputc('\n', f);
}

void args_usage(FILE *f, const char *cmd, const ArgSpec *spec, int nspec, const ArgHelp *h) {
    fprintf(f, "usage: xrank %s [flags]\n%s\n\nflags:\n", cmd, h->summary);
    enum { LEFT = 30, WIDTH = 110 };
    for (int i = 0; i < nspec; i++) {
        char left[96], text[1024];
        const char *meta = spec[i].type == ARG_SWITCH ? "" : spec[i].type == ARG_CHOICE ? spec[i].choices
                                                                                          : spec[i].meta;
        snprintf(left, sizeof left, "--%s%s%s", spec[i].name, meta && *meta ? " " : "", meta ? meta : "");
        if (spec[i].def && spec[i].type != ARG_SWITCH)
            snprintf(text, sizeof text, "%s (default: %s)", spec[i].help, *spec[i].def ? spec[i].def : "\"\"");
        else
            snprintf(text, sizeof text, "%s", spec[i].help);
        int col = fprintf(f, "  %-*s", LEFT - 3, left);
        if (col > LEFT - 1) {
            fprintf(f, "\n%*s", LEFT, "");
            col = LEFT;
        } else {
            fputc(' ', f);
            col++;
        }
        args_wrap(f, text, LEFT, LEFT, WIDTH);
        (void)col;
    }
    fprintf(f, "\nFlags may be spelled with - or _ (--batch-size or --batch_size). Any flag can also come from\n"
               "--config FILE, a JSON object whose keys are the flag names in either spelling ({\"batch-size\": 32},\n"
               "or inside a \"%s\": {...} section); the command line wins over the file. A key that is no command's\n"
               "flag is an error.\n",
            cmd);
    if (h->details) fprintf(f, "\n%s\n", h->details);
    if (h->examples) fprintf(f, "\nexamples:\n%s\n", h->examples);
}

static int args_index(const Args *a, const char *name) {
    int i = args_find(a->spec, a->n, name, strlen(name));
    assert(i >= 0 && "flag not in the command's table");
    return i;
}

const char *args_str(const Args *a, const char *name) { return a->val[args_index(a, name)]; }

long args_int(const Args *a, const char *name) {
    const char *v = args_str(a, name);
    long l = 0;
    if (v) {
        int rc = args_parse_long(v, &l);
        assert(rc == 0);
        (void)rc;
    }
    return l;
}

double args_float(const Args *a, const char *name) {
    const char *v = args_str(a, name);
    double d = 0;
    if (v) {
        int rc = args_parse_double(v, &d);
        assert(rc == 0);
        (void)rc;
    }
    return d;
}

int args_bool(const Args *a, const char *name) {
    const char *v = args_str(a, name);
    int b = 0;
    if (v) {
        int rc = args_parse_boolean(v, &b);
        assert(rc == 0);
        (void)rc;
    }
    return b;
}

int args_is_set(const Args *a, const char *name) {
    int i = args_index(a, name);
    return a->val[i] && a->from[i] != ARG_FROM_DEFAULT;
}
