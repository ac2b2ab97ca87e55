/* comm_hbnet.c: the liveness heartbeat across nodes. The heartbeat lines (comm_mpi.c) live in node-shared memory; for
 * a job on several nodes, each node's leader (node rank 0) relays its node's lines to the other leaders in a UDP
 * datagram every heartbeat period, from the heartbeat thread and its own socket (no MPI call off the main thread:
 * MPI_THREAD_FUNNELED), and writes what it receives into the lines of the remote ranks, so a wait sees a stopped or
 * departed rank on another node, and how far it got in the collective sequence, as it sees one on its own. The main
 * thread sets it up (addresses exchanged over MPI). One dual-stack IPv6 socket carries IPv4 and IPv6 (an IPv4 socket
 * where the kernel has no IPv6). A remote line is judged only once a datagram has filled it: where UDP does not get
 * through (a firewall, no usable address), remote ranks keep only --comm-stall-timeout, as before. */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* getifaddrs */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "comm_impl.h"

#define XR_HBNET_MAGIC 0x78724842u /* "xrHB" */
#define XR_HBNET_ADDRS 8
#define XR_HBNET_MAX_LOCAL 1024 /* ranks per node in one datagram (32 bytes each: 32 KiB) */

typedef struct {
    int32_t world;               /* the leader's world rank; -1: no socket there */
    uint16_t port;               /* network order */
    uint16_t naddr;
    uint8_t addr[XR_HBNET_ADDRS][16]; /* IPv6; IPv4 as ::ffff:a.b.c.d (network order) */
    char stack[96]; /* the network stack it runs on (hbnet_stack_id); "": not known */
} HbLeader;

typedef struct {
    uint32_t magic, count;
    uint64_t nonce;
    int32_t from; /* the sending leader's world rank */
    uint32_t pad;
} HbHead;

typedef struct {
    int32_t world;
    uint32_t state;
    uint32_t code;
    uint32_t age_ms; /* how old that rank's clock was when sent */
    uint64_t begun, done; /* its collective sequence words (XR_HB_BEGUN, XR_HB_DONE) */
} HbEntry;

struct HbNet {
    int fd, v6; /* v6: a dual-stack AF_INET6 socket (IPv4 peers as mapped addresses); 0: AF_INET, IPv4 only */
    uint64_t nonce;
    int me, size, nlead;
    HbLeader *lead;              /* [nlead] the other leaders (this one left out) */
    struct sockaddr_storage *to; /* [nlead] the address a leader's datagrams came from (port 0: none yet) */
    int *local, nlocal;     /* world ranks of this node */
    const int *via;         /* [size] world rank of the leader relaying each rank (-1: this node) */
    char *buf;
    size_t buf_n;
};

static uint64_t hbnet_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Which network stack this process runs on: the kernel's boot id (one per boot of a machine, the same in its
 * containers) and the inode of this process's network namespace, so two leaders with the same id reach each other
 * over loopback, and leaders on different machines (or in containers with their own network) never take each other
 * for local, whatever their host names are (containers and cloud images often share one). "" when /proc does not say.
 * XR_TEST_HBNET_APART=1 (tests): each leader a stack of its own (its world rank appended). */
static void hbnet_stack_id(char *out, size_t n, int rank) {
    out[0] = 0;
    char boot[64] = {0};
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, boot, sizeof boot - 1) : -1;
    if (fd >= 0) close(fd);
    struct stat ns;
    if (got <= 0 || stat("/proc/self/ns/net", &ns) != 0) return;
    boot[strcspn(boot, "\n")] = 0;
    const char *apart = getenv("XR_TEST_HBNET_APART");
    int len = snprintf(out, n, "%s:%lu:%lu", boot, (unsigned long)ns.st_dev, (unsigned long)ns.st_ino);
    if (apart && apart[0] == '1' && len > 0 && (size_t)len < n) snprintf(out + len, n - (size_t)len, ":rank%d", rank);
}

static const uint8_t hbnet_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}; /* ::ffff:0:0/96 */

/* Which addresses a socket takes: IPv4 only (an AF_INET socket), both (dual-stack AF_INET6), IPv6 only (tests:
 * XR_TEST_HBNET_V6=1, the relay over IPv6 alone). */
enum { HBNET_V4 = 0, HBNET_BOTH = 1, HBNET_V6 = 2 };

/* The loopback address for the mode: ::1 for IPv6 alone, else 127.0.0.1 (mapped). */
static void hbnet_loopback(uint8_t a[16], int mode) {
    uint32_t v4 = htonl(INADDR_LOOPBACK);
    if (mode == HBNET_V6) memcpy(a, &in6addr_loopback, 16);
    else memcpy(a, hbnet_mapped, 12), memcpy(a + 12, &v4, 4);
}

/* This host's addresses that are up, for the mode, loopback left out (and IPv6 link-local ones: those need the
 * receiver's interface index); IPv4 first. With none, loopback only. */
static int hbnet_addrs(uint8_t (*out)[16], int max, int mode) {
    struct ifaddrs *ifa = NULL;
    int n = 0;
    if (getifaddrs(&ifa) == 0) {
        for (int fam = 0; fam < 2; fam++)
            for (struct ifaddrs *p = ifa; p && n < max; p = p->ifa_next) {
                if (!p->ifa_addr || !(p->ifa_flags & IFF_UP) || (p->ifa_flags & IFF_LOOPBACK)) continue;
                if (fam == 0 && p->ifa_addr->sa_family == AF_INET && mode != HBNET_V6) {
                    memcpy(out[n], hbnet_mapped, 12);
                    memcpy(out[n++] + 12, &((struct sockaddr_in *)p->ifa_addr)->sin_addr.s_addr, 4);
                } else if (fam == 1 && p->ifa_addr->sa_family == AF_INET6 && mode != HBNET_V4) {
                    const struct in6_addr *a6 = &((struct sockaddr_in6 *)p->ifa_addr)->sin6_addr;
                    if (IN6_IS_ADDR_LINKLOCAL(a6) || IN6_IS_ADDR_V4MAPPED(a6) || IN6_IS_ADDR_LOOPBACK(a6)) continue;
                    memcpy(out[n++], a6, 16);
                }
            }
        freeifaddrs(ifa);
    }
    if (n == 0) hbnet_loopback(out[n++], mode);
    return n;
}

/* The socket address of a (port in network order) for this socket; 0 when the socket cannot reach it (an IPv6
 * address from an IPv4 socket). */
static socklen_t hbnet_sockaddr(int v6, const uint8_t a[16], uint16_t port, struct sockaddr_storage *out) {
    memset(out, 0, sizeof *out);
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
        s6->sin6_family = AF_INET6, s6->sin6_port = port;
        memcpy(&s6->sin6_addr, a, 16);
        return sizeof *s6;
    }
    if (memcmp(a, hbnet_mapped, 12)) return 0;
    struct sockaddr_in *s4 = (struct sockaddr_in *)out;
    s4->sin_family = AF_INET, s4->sin_port = port;
    memcpy(&s4->sin_addr.s_addr, a + 12, 4);
    return sizeof *s4;
}

static uint16_t hbnet_port(const struct sockaddr_storage *s) {
    if (s->ss_family == AF_INET6) return ((const struct sockaddr_in6 *)s)->sin6_port;
    if (s->ss_family == AF_INET) return ((const struct sockaddr_in *)s)->sin_port;
    return 0;
}

HbNet *comm_hbnet_start(Comm *c, _Atomic uint64_t *hb, const int *node_world, int **via_out) {
    *via_out = NULL;
    if (c->size == c->local_size) return NULL; /* one node: the same answer on every rank */
    int leader = c->local_rank == 0;
    /* every rank: which leader relays each world rank */
    int my_leader = node_world[0], *via = xr_malloc(sizeof(int) * (size_t)c->size);
    MPI_Request rq;
    comm_checked(MPI_Iallgather(&my_leader, 1, MPI_INT, via, 1, MPI_INT, c->world, &rq), "MPI_Iallgather");
    comm_mpi_wait_timed(c, 1, &rq, "heartbeat set-up (nodes)");
    for (int r = 0; r < c->size; r++)
        if (via[r] == my_leader) via[r] = -1;
    uint64_t nonce = 0;
    if (c->rank == 0) { /* the job's mark on its datagrams: random where the system gives it */
        int rf = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (rf < 0 || read(rf, &nonce, sizeof nonce) != (ssize_t)sizeof nonce)
            nonce = hbnet_ms() * 6364136223846793005ull ^ (uint64_t)getpid() << 20;
        if (rf >= 0) close(rf);
    }
    comm_checked(MPI_Ibcast(&nonce, 1, MPI_UINT64_T, 0, c->world, &rq), "MPI_Ibcast");
    comm_mpi_wait_timed(c, 1, &rq, "heartbeat set-up (nodes)");
    MPI_Comm lc;
    comm_checked(MPI_Comm_split(c->world, leader ? 0 : MPI_UNDEFINED, c->rank, &lc), "MPI_Comm_split(leaders)");
    if (!leader) {
        *via_out = via;
        return NULL;
    }
    HbLeader mine;
    memset(&mine, 0, sizeof mine);
    mine.world = -1;
    /* a dual-stack IPv6 socket (IPv4 peers as mapped addresses), else, where the kernel has no IPv6, an IPv4 one */
    int fd = -1, mode = HBNET_V4;
    if (hb && !getenv("XR_TEST_NO_UDP")) {
        const char *only6 = getenv("XR_TEST_HBNET_V6");
        int off = 0;
        fd = socket(AF_INET6, SOCK_DGRAM, 0);
        if (fd >= 0 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) != 0) close(fd), fd = -1;
        if (fd >= 0) mode = only6 && only6[0] == '1' ? HBNET_V6 : HBNET_BOTH;
        else fd = socket(AF_INET, SOCK_DGRAM, 0);
    }
    if (fd >= 0) {
        struct sockaddr_storage a;
        uint8_t any[16] = {0}, first[1][16];
        socklen_t len = hbnet_sockaddr(mode != HBNET_V4, any, 0, &a);
        const char *apart = getenv("XR_TEST_HBNET_APART");
        if (apart && apart[0] == '1') { /* tests: as on another machine, loopback does not reach this socket */
            uint8_t lo[16];
            hbnet_loopback(lo, mode);
            if (hbnet_addrs(first, 1, mode) == 1 && memcmp(first[0], lo, 16))
                len = hbnet_sockaddr(mode != HBNET_V4, first[0], 0, &a);
        }
        if (bind(fd, (struct sockaddr *)&a, len) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0 ||
            fcntl(fd, F_SETFL, O_NONBLOCK) != 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
            fprintf(stderr, "xrank: rank %d: no heartbeat across nodes (UDP socket: %s): a stopped rank on another node "
                    "is found only after --comm-stall-timeout\n", c->rank, strerror(errno));
            close(fd), fd = -1;
        } else {
            mine.world = c->rank, mine.port = hbnet_port(&a);
            mine.naddr = (uint16_t)hbnet_addrs(mine.addr, XR_HBNET_ADDRS, mode);
            hbnet_stack_id(mine.stack, sizeof mine.stack, c->rank);
        }
    }
    int nl = 0;
    comm_checked(MPI_Comm_size(lc, &nl), "MPI_Comm_size(leaders)");
    HbLeader *all = xr_calloc((size_t)nl, sizeof *all);
    comm_checked(MPI_Iallgather(&mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, lc, &rq),
                 "MPI_Iallgather(leaders)");
    comm_mpi_wait_timed(c, 1, &rq, "heartbeat set-up (nodes)");
    MPI_Comm_free(&lc);
    if (fd < 0) {
        free(all);
        *via_out = via;
        return NULL;
    }
    HbNet *n = xr_calloc(1, sizeof *n);
    n->fd = fd, n->v6 = mode != HBNET_V4, n->nonce = nonce, n->me = c->rank, n->size = c->size, n->via = via;
    n->lead = xr_calloc((size_t)nl, sizeof *n->lead);
    n->to = xr_calloc((size_t)nl, sizeof *n->to);
    for (int i = 0; i < nl; i++) {
        if (all[i].world == c->rank || all[i].world < 0) continue;
        HbLeader *l = &n->lead[n->nlead++];
        *l = all[i];
        l->stack[sizeof l->stack - 1] = 0;
        if (mine.stack[0] && !strcmp(l->stack, mine.stack)) /* one network stack: nodes faked on one machine */
            l->naddr = 1, hbnet_loopback(l->addr[0], mode);
    }
    free(all);
    n->nlocal = c->local_size < XR_HBNET_MAX_LOCAL ? c->local_size : XR_HBNET_MAX_LOCAL;
    n->local = xr_malloc(sizeof(int) * (size_t)n->nlocal);
    memcpy(n->local, node_world, sizeof(int) * (size_t)n->nlocal);
    n->buf_n = sizeof(HbHead) + sizeof(HbEntry) * XR_HBNET_MAX_LOCAL;
    n->buf = xr_malloc(n->buf_n);
    *via_out = via;
    return n;
}

/* One period on a leader's heartbeat thread: send this node's lines to the other leaders, then take in what came. */
void comm_hbnet_tick(HbNet *n, _Atomic uint64_t *hb) {
    uint64_t now = hbnet_ms();
    HbHead h = {XR_HBNET_MAGIC, (uint32_t)n->nlocal, n->nonce, n->me, 0};
    memcpy(n->buf, &h, sizeof h);
    for (int i = 0; i < n->nlocal; i++) {
        _Atomic uint64_t *line = &hb[(size_t)n->local[i] * XR_HB_LINE];
        uint64_t t = atomic_load_explicit(&line[XR_HB_CLOCK], memory_order_acquire);
        /* the state first: once it says the rank left, the sequence words read after it are final */
        HbEntry e = {n->local[i], (uint32_t)atomic_load_explicit(&line[XR_HB_STATE], memory_order_acquire),
                     (uint32_t)atomic_load_explicit(&line[XR_HB_CODE], memory_order_relaxed),
                     (uint32_t)(now > t ? (now - t < UINT32_MAX ? now - t : UINT32_MAX) : 0),
                     atomic_load_explicit(&line[XR_HB_BEGUN], memory_order_acquire),
                     atomic_load_explicit(&line[XR_HB_DONE], memory_order_acquire)};
        memcpy(n->buf + sizeof h + sizeof e * (size_t)i, &e, sizeof e);
    }
    size_t len = sizeof h + sizeof(HbEntry) * (size_t)n->nlocal;
    for (int i = 0; i < n->nlead; i++) {
        HbLeader *l = &n->lead[i];
        if (hbnet_port(&n->to[i])) { /* a datagram came from there: answer only that address */
            socklen_t tl = n->to[i].ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
            sendto(n->fd, n->buf, len, MSG_DONTWAIT, (struct sockaddr *)&n->to[i], tl);
            continue;
        }
        for (int k = 0; k < l->naddr && k < XR_HBNET_ADDRS; k++) {
            struct sockaddr_storage a;
            socklen_t al = hbnet_sockaddr(n->v6, l->addr[k], l->port, &a);
            if (al) sendto(n->fd, n->buf, len, MSG_DONTWAIT, (struct sockaddr *)&a, al);
        }
    }
    for (;;) {
        struct sockaddr_storage src;
        socklen_t sl = sizeof src;
        ssize_t got = recvfrom(n->fd, n->buf, n->buf_n, MSG_DONTWAIT, (struct sockaddr *)&src, &sl);
        if (got < 0) break;
        if ((size_t)got < sizeof h) continue;
        memcpy(&h, n->buf, sizeof h);
        if (h.magic != XR_HBNET_MAGIC || h.nonce != n->nonce || h.count > XR_HBNET_MAX_LOCAL ||
            (size_t)got != sizeof h + sizeof(HbEntry) * h.count)
            continue; /* not this job's */
        int from = -1;
        for (int i = 0; i < n->nlead; i++)
            if (n->lead[i].world == h.from && n->lead[i].port == hbnet_port(&src)) from = i;
        if (from < 0) continue;
        if (!hbnet_port(&n->to[from])) n->to[from] = src;
        now = hbnet_ms();
        for (uint32_t k = 0; k < h.count; k++) {
            HbEntry e;
            memcpy(&e, n->buf + sizeof h + sizeof e * k, sizeof e);
            if (e.world < 0 || e.world >= n->size || n->via[e.world] != h.from) continue;
            _Atomic uint64_t *line = &hb[(size_t)e.world * XR_HB_LINE];
            if (atomic_load(&line[XR_HB_STATE]) != XR_HB_RUNNING) continue; /* its last word is in */
            /* the sequence words before the state and the clock (release): a reader that sees either sees them;
             * only forward (datagrams may come out of order) */
            if (e.begun > atomic_load_explicit(&line[XR_HB_BEGUN], memory_order_relaxed))
                atomic_store_explicit(&line[XR_HB_BEGUN], e.begun, memory_order_relaxed);
            if (e.done > atomic_load_explicit(&line[XR_HB_DONE], memory_order_relaxed))
                atomic_store_explicit(&line[XR_HB_DONE], e.done, memory_order_relaxed);
            if (e.state != XR_HB_RUNNING) {
                atomic_store_explicit(&line[XR_HB_CODE], e.code, memory_order_relaxed);
                atomic_store_explicit(&line[XR_HB_STATE], e.state, memory_order_release);
            }
            uint64_t t = now > e.age_ms ? now - e.age_ms : 1;
            atomic_store_explicit(&line[XR_HB_CLOCK], t ? t : 1, memory_order_release);
        }
    }
}

void comm_hbnet_free(HbNet *n) {
    if (!n) return;
    close(n->fd);
    free(n->lead), free(n->to), free(n->local), free(n->buf), free(n);
}
