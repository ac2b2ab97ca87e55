/* args.h: the flag parser every subcommand shares: `--name value`, `--name=value`, value-less switches,
 * a --config JSON file whose keys are the flag names (command line wins over the file, the file over the
 * defaults), strict typed values, and a --help page generated from the same table. */
#ifndef XR_ARGS_H
#define XR_ARGS_H
#include <stdio.h>

#include "xr_common.h"

typedef enum {
    ARG_STR,    /* any text */
    ARG_INT,    /* integer (checked against min) */
    ARG_FLOAT,  /* number */
    ARG_BOOL,   /* takes 0|1 (also true|false) */
    ARG_SWITCH, /* no value on the command line: present = 1; true/false in a config file */
    ARG_CHOICE, /* one of choices, "a|b|c" */
} ArgType;

typedef struct {
    const char *name; /* without dashes: "batch-size" */
    ArgType type;
    const char *def;  /* default as text; NULL = unset */
    const char *meta; /* placeholder in the help: "N", "FILE" */
    const char *help;
    const char *choices; /* ARG_CHOICE: "cls|mean" */
    long min;            /* ARG_INT: smallest accepted value */
} ArgSpec;

/* One command's flag table: what a config file shared by the pipeline's commands may name. */
typedef struct ArgTable {
    const char *cmd;
    const ArgSpec *spec;
    int n;
} ArgTable;

typedef enum { ARG_FROM_DEFAULT = 0, ARG_FROM_CONFIG = 1, ARG_FROM_CMDLINE = 2 } ArgSource;

typedef struct {
    const char *cmd;
    const ArgSpec *spec;
    int n;
    char **val;       /* [n] current text value, NULL = unset */
    ArgSource *from;  /* [n] */
    char **positional;
    int npositional;
    const struct ArgTable *all; /* every command's table (config files), may be NULL */
    int nall;
} Args;

/* What a command's page shows besides the flag table. */
typedef struct {
    const char *summary;  /* one line */
    const char *details;  /* paragraphs, may be NULL */
    const char *examples; /* lines, may be NULL */
} ArgHelp;

/* Parse argv (argv[0] is the command name). Returns 0 on success, 1 when --help was given (the caller
 * prints the page with args_usage and exits 0), -1 on a bad flag or value with e naming it. Positional
 * arguments are an error unless max_positional > 0. A flag may be spelled with - or _ (--learning_rate is
 * --learning-rate), on the command line and in a config file. A config file's top-level keys are the flags
 * of this command (applied) or of another one of `all` (skipped: one file serves the whole pipeline), or a
 * section named after a command; any other key is an error naming the key, the file and the closest flag. */
int args_parse(Args *a, const char *cmd, const ArgSpec *spec, int nspec, int max_positional, const ArgTable *all,
               int nall, int argc, char **argv, XrErr *e);
void args_free(Args *a);
/* The resolved flags, one line each: name, value ("-" when unset: the command resolves it at run time, see
 * --help) and where it came from (default, the config file's path, command line). --config and --print-config
 * themselves are left out. */
void args_print_config(FILE *f, const Args *a);
void args_usage(FILE *f, const char *cmd, const ArgSpec *spec, int nspec, const ArgHelp *h);

/* Typed getters; the name must be in the table (an unknown name asserts: a bug). Values were validated by
 * args_parse. */
const char *args_str(const Args *a, const char *name); /* NULL when unset */
long args_int(const Args *a, const char *name);
double args_float(const Args *a, const char *name);
int args_bool(const Args *a, const char *name);
int args_is_set(const Args *a, const char *name); /* given on the command line or in the config */

#endif
