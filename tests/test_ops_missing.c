/* test_ops_missing: an op a backend lacks is named up front, from the static op tables (no GPU needed): the
 * CPU backend lacks nothing; a table with holes reports exactly its holes by name, in list order, for the sets
 * asked; ops_device_require's message names them; a backend this build lacks misses every op; the CUDA
 * backend's missing names are real ops; and an op called anyway dies naming itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>
#include <unistd.h>

#include "ops.h"
#include "ops_table.h"
#include "testutil.h"

/* every op name of ops_list.h, comma-separated: what a table with no entries lacks */
static int all_ops(unsigned sets, char *buf, size_t n) { return ops_table_missing(NULL, sets, buf, n); }

#ifdef XR_HAVE_CUDA
/* name is one whole entry of the comma-separated list */
static int list_has(const char *list, const char *name) {
    size_t k = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p += k)
        if ((p == list || p[-1] == ' ') && (p[k] == ',' || p[k] == '\0')) return 1;
    return 0;
}
#endif

static void test_cpu_complete(void) {
    char buf[2048];
    TU_CHECK(ops_device_missing(XR_DEV_CPU, XR_OPSET_ALL, buf, sizeof buf) == 0, "CPU lacks: %s", buf);
    Backend *be = ops_backend_cpu(1);
    TU_CHECK(ops_backend_missing(be, XR_OPSET_ALL, buf, sizeof buf) == 0, "CPU backend lacks: %s", buf);
    XrErr e = {0};
    TU_CHECK(ops_device_require(XR_DEV_CPU, XR_OPSET_ALL, "everything", &e) == 0, "%s", e.msg);
    ops_backend_free(be);
}

static void test_holes_named(void) {
    Backend *cpu = ops_backend_cpu(1);
    OpsTable t = *cpu->ops;
    t.adamw = NULL;
    t.gelu_backward = NULL;
    t.pool_mean = NULL;
    Backend fake = *cpu;
    fake.ops = &t;
    char buf[256];
    int k = ops_backend_missing(&fake, XR_OPSET_TRAIN, buf, sizeof buf);
    TU_CHECK(k == 2 && strcmp(buf, "gelu_backward, adamw") == 0, "TRAIN: %d missing, \"%s\"", k, buf);
    k = ops_backend_missing(&fake, XR_OPSET_INFER, buf, sizeof buf);
    TU_CHECK(k == 1 && strcmp(buf, "pool_mean") == 0, "INFER: %d missing, \"%s\"", k, buf);
    k = ops_backend_missing(&fake, XR_OPSET_BASE, buf, sizeof buf);
    TU_CHECK(k == 0 && buf[0] == '\0', "BASE: %d missing, \"%s\"", k, buf);
    k = ops_backend_missing(&fake, XR_OPSET_ALL, NULL, 0);
    TU_CHECK(k == 3, "ALL, no buffer: %d missing", k);
    /* a short buffer is cut, never overrun */
    char small[8];
    memset(small, 'x', sizeof small);
    k = ops_backend_missing(&fake, XR_OPSET_ALL, small, 6);
    TU_CHECK(k == 3 && strlen(small) == 5 && small[7] == 'x', "cut list \"%s\" (%d)", small, k);

    /* called anyway: dies with the op's name */
    int fd[2];
    TU_CHECK(pipe(fd) == 0, "pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        float x[4] = {0};
        ops_gelu_backward(&fake, x, x, x, 4);
        _exit(0); /* not reached */
    }
    close(fd[1]);
    char out[512] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof out - 1 && (r = read(fd[0], out + got, sizeof out - 1 - got)) > 0) got += (size_t)r;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    TU_CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "ops_gelu_backward on a table without it returned");
    TU_CHECK(strstr(out, "gelu_backward") != NULL, "the death message does not name the op: \"%s\"", out);
    ops_backend_free(cpu);
}

static void test_cuda_table(void) {
    char all[2048], buf[2048];
    int n_all = all_ops(XR_OPSET_ALL, all, sizeof all);
    TU_CHECK(n_all >= 30, "the op list has %d ops", n_all);
    int k = ops_device_missing(XR_DEV_CUDA, XR_OPSET_ALL, buf, sizeof buf);
    XrErr e = {0};
    int rc = ops_device_require(XR_DEV_CUDA, XR_OPSET_TRAIN, "training", &e);
#ifndef XR_HAVE_CUDA
    TU_CHECK(k == n_all && strcmp(buf, all) == 0, "no CUDA backend in this build, yet it lacks only %d ops", k);
    TU_CHECK(rc == -1 && strstr(e.msg, "built without"), "require without the backend: \"%s\"", e.msg);
#else
    char names[2048];
    snprintf(names, sizeof names, "%s", buf);
    printf("the CUDA backend of this build lacks %d op(s): %s\n", k, k ? buf : "none");
    for (char *tok = strtok(names, ", "); tok; tok = strtok(NULL, ", "))
        TU_CHECK(list_has(all, tok), "CUDA missing list names \"%s\", not an op", tok);
    TU_CHECK(ops_device_missing(XR_DEV_CUDA, XR_OPSET_BASE | XR_OPSET_INFER, buf, sizeof buf) == 0,
             "the CUDA backend lacks inference ops: %s", buf);
    int kt = ops_device_missing(XR_DEV_CUDA, XR_OPSET_TRAIN, buf, sizeof buf);
    TU_CHECK((kt == 0) == (rc == 0), "require %d but %d training ops missing", rc, kt);
    if (kt > 0) {
        char first[64];
        snprintf(first, sizeof first, "%.*s", (int)strcspn(buf, ","), buf);
        TU_CHECK(strstr(e.msg, first) && strstr(e.msg, "training"), "require's message \"%s\" lacks \"%s\"", e.msg,
                 first);
        printf("%s\n", e.msg);
    }
#endif
    (void)rc;
}

int main(void) {
    test_cpu_complete();
    test_holes_named();
    test_cuda_table();
    return tu_finish("test_ops_missing");
}
