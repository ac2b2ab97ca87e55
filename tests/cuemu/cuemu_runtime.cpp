// cuemu_runtime.cpp: the CPU emulator's runtime (tests/cuemu/README.md): the kernel launch (threads as fibers on
// our own stack switch, blocks one after another), the warp collectives' scheduling, the mma emulation, and the
// CUDA runtime API functions our code calls, on host memory with one emulated device.
#include "cuemu.h"

#include <cudnn.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <random>
#include <vector>

// ---- the stack switch (x86-64 System V): saves the callee-saved registers, MXCSR and the x87 control word on the
// old stack, stores its pointer in *from, and resumes the stack `to` the same way ----
extern "C" void cuemu_switch(void **from, void *to);
extern "C" void cuemu_fiber_start();
asm(R"(
.text
.globl cuemu_switch
.type cuemu_switch,@function
cuemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size cuemu_switch, .-cuemu_switch
.globl cuemu_fiber_start
.type cuemu_fiber_start,@function
cuemu_fiber_start:
    call cuemu_fiber_main
    ud2
.size cuemu_fiber_start, .-cuemu_fiber_start
.section .note.GNU-stack,"",@progbits
.text
)");

namespace cuemu {

enum { READY, AT_BAR, AT_WARP, DONE };

Thread *cur;
uint3 block_idx;
dim3 block_dim, grid_dim;

namespace {

const size_t kStack = (size_t)256 << 10; // a fiber's stack; kernels keep their tiles in locals

struct Warp {
    unsigned live = 0, waiting = 0, need = 0, arrived = 0;
    uint64_t slots[32 * 8];
};

struct Launch {
    const char *kernel = "", *file = "";
    int line = 0;
    Thunk thunk = nullptr;
    void *body = nullptr;
    std::vector<Thread> threads;
    std::vector<Warp> warps;
    std::vector<int> ready, next;
    int alive = 0, at_bar = 0;
    unsigned char *smem = nullptr;
    size_t smem_bytes = 0;
    void *sched_sp = nullptr;
    int bad_lane_notes = 0;
};

Launch *L;
std::vector<void *> stack_pool;
std::mutex launch_mutex;
int order_mode = -1; // 0 forward, 1 reverse, 2 shuffled (XR_CUEMU_ORDER)
std::mt19937 order_rng(12345);

void *stack_get() {
    if (!stack_pool.empty()) {
        void *s = stack_pool.back();
        stack_pool.pop_back();
        return s;
    }
    void *s = mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) die("cannot map a %zu-byte fiber stack", kStack);
    mprotect(s, 4096, PROT_NONE); // a guard page: an overflowing kernel faults instead of corrupting
    return s;
}

void release_ready(int idx) {
    L->threads[idx].state = READY;
    L->next.push_back(idx);
}

// a lane arrived at a warp collective or exited: release the warp's waiting lanes once every live lane their
// masks name is waiting
void warp_check(Warp &w) {
    if (!w.waiting) return;
    unsigned need = w.need & w.live;
    if ((w.waiting & need) != need) return;
    w.arrived = w.waiting;
    unsigned m = w.waiting;
    w.waiting = w.need = 0;
    int base = (int)(&w - L->warps.data()) * 32;
    for (int l = 0; l < 32; l++)
        if (m >> l & 1) release_ready(base + l);
}

void bar_check() {
    if (L->at_bar == 0 || L->at_bar != L->alive) return;
    L->at_bar = 0;
    for (size_t i = 0; i < L->threads.size(); i++)
        if (L->threads[i].state == AT_BAR) release_ready((int)i);
}

void yield_to_scheduler() { cuemu_switch(&cur->sp, L->sched_sp); }

const char *state_name(int s) {
    return s == READY ? "ready" : s == AT_BAR ? "__syncthreads" : s == AT_WARP ? "warp collective" : "exited";
}

} // namespace

extern "C" void cuemu_fiber_main() {
    L->thunk(L->body);
    Thread *t = cur;
    t->state = DONE;
    L->alive--;
    Warp &w = L->warps[t->lin / 32];
    w.live &= ~(1u << (t->lin & 31));
    warp_check(w);
    bar_check();
    cuemu_switch(&t->sp, L->sched_sp);
    abort(); // a finished fiber is never resumed
}

void die(const char *fmt, ...) {
    fflush(stdout);
    fprintf(stderr, "cuemu: ");
    if (L) fprintf(stderr, "kernel %s (%s:%d), block (%u,%u,%u): ", L->kernel, L->file, L->line, block_idx.x,
                   block_idx.y, block_idx.z);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    abort();
}

void note_bad_lane(const char *op, int src) {
    if (L->bad_lane_notes++ < 3)
        fprintf(stderr,
                "cuemu: kernel %s (%s:%d), block (%u,%u,%u), thread %d: %s reads lane %d, which did not take part "
                "(exited or outside the mask): undefined on the GPU, poison here\n",
                L->kernel, L->file, L->line, block_idx.x, block_idx.y, block_idx.z, cur->lin, op, src);
}

void syncthreads() {
    cur->state = AT_BAR;
    L->at_bar++;
    bar_check();
    yield_to_scheduler();
}

void warp_sync(unsigned mask) {
    const int me = cur->lin & 31;
    if (!(mask >> me & 1)) die("thread %d: a warp collective with mask %08x that leaves out its own lane %d", cur->lin,
                               mask, me);
    Warp &w = L->warps[cur->lin / 32];
    cur->state = AT_WARP;
    cur->mask = mask;
    w.waiting |= 1u << me;
    w.need |= mask;
    warp_check(w);
    yield_to_scheduler();
}

uint64_t *warp_slots() { return L->warps[cur->lin / 32].slots; }
unsigned warp_arrived() { return L->warps[cur->lin / 32].arrived; }
unsigned warp_live() { return L->warps[cur->lin / 32].live; }
void *dyn_smem() { return L->smem; }

static void order(std::vector<int> &v) {
    if (order_mode == 1) std::reverse(v.begin(), v.end());
    else if (order_mode == 2) std::shuffle(v.begin(), v.end(), order_rng);
}

static void run_block() {
    Launch &l = *L;
    const int n = (int)l.threads.size();
    for (auto &w : l.warps) w = Warp();
    for (int i = 0; i < n; i++) {
        Thread &t = l.threads[i];
        t.stack = nullptr;
        t.state = READY;
        l.warps[i / 32].live |= 1u << (i & 31);
    }
    if (l.smem_bytes) memset(l.smem, 0xff, l.smem_bytes); // undefined at a block's start: poison
    l.alive = n;
    l.at_bar = 0;
    l.ready.resize(n);
    for (int i = 0; i < n; i++) l.ready[i] = i;
    l.next.clear();
    while (l.alive > 0) {
        if (l.ready.empty()) {
            char what[512];
            int off = 0;
            for (int i = 0; i < n && off < 400; i++)
                if (l.threads[i].state != DONE)
                    off += snprintf(what + off, sizeof what - off, " t%d:%s", i, state_name(l.threads[i].state));
            die("deadlock: no thread can go on (a barrier or warp collective that not every thread reaches):%s", what);
        }
        order(l.ready);
        for (int idx : l.ready) {
            Thread &t = l.threads[idx];
            cur = &t;
            if (!t.stack) {
                t.stack = stack_get();
                // the frame cuemu_switch pops: control words, r15..rbp, then the return address cuemu_fiber_start;
                // after its `ret` the stack is 16-byte aligned, as a call expects
                uint64_t *sp = (uint64_t *)((char *)t.stack + kStack - 16) - 8;
                uint32_t csr;
                uint16_t cw;
                asm volatile("stmxcsr %0" : "=m"(csr));
                asm volatile("fnstcw %0" : "=m"(cw));
                sp[0] = (uint64_t)csr | (uint64_t)cw << 32;
                for (int r = 1; r <= 6; r++) sp[r] = 0;
                sp[7] = (uint64_t)(uintptr_t)&cuemu_fiber_start;
                t.sp = sp;
            }
            cuemu_switch(&l.sched_sp, t.sp);
            if (t.state == DONE && t.stack) {
                stack_pool.push_back(t.stack);
                t.stack = (void *)1; // started and finished: never restarted
            }
        }
        l.ready.swap(l.next);
        l.next.clear();
    }
    cur = nullptr;
}

static cudaError_t last_error = cudaSuccess;

void launch_impl(const char *kernel, const char *file, int line, Thunk thunk, void *body, dim3 grid, dim3 block,
                 size_t smem, cudaStream_t stream) {
    (void)stream;
    std::lock_guard<std::mutex> guard(launch_mutex);
    if (order_mode < 0) {
        const char *e = getenv("XR_CUEMU_ORDER");
        order_mode = !e || !*e || !strcmp(e, "forward") ? 0 : !strcmp(e, "reverse") ? 1 : !strcmp(e, "shuffle") ? 2 : -1;
        if (order_mode < 0) {
            fprintf(stderr, "cuemu: XR_CUEMU_ORDER=%s: expected forward, reverse or shuffle\n", e);
            exit(2);
        }
    }
    const unsigned long long nthreads = (unsigned long long)block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || nthreads == 0 || nthreads > 1024 || block.z > 64 ||
        grid.y > 65535 || grid.z > 65535 || smem > (size_t)227 << 10) {
        fprintf(stderr, "cuemu: kernel %s (%s:%d): invalid launch: grid (%u,%u,%u), block (%u,%u,%u), %zu B dynamic "
                        "shared memory\n", kernel, file, line, grid.x, grid.y, grid.z, block.x, block.y, block.z, smem);
        last_error = cudaErrorInvalidConfiguration;
        return;
    }
    Launch l;
    l.kernel = kernel;
    l.file = file;
    l.line = line;
    l.thunk = thunk;
    l.body = body;
    l.threads.resize(nthreads);
    l.warps.resize((nthreads + 31) / 32);
    for (unsigned z = 0, i = 0; z < block.z; z++)
        for (unsigned y = 0; y < block.y; y++)
            for (unsigned x = 0; x < block.x; x++, i++) {
                l.threads[i].tid = make_uint3(x, y, z);
                l.threads[i].lin = (int)i;
            }
    std::vector<unsigned char> sm(smem + 16);
    l.smem = smem ? (unsigned char *)(((uintptr_t)sm.data() + 15) & ~(uintptr_t)15) : nullptr;
    l.smem_bytes = smem;
    L = &l;
    block_dim = block;
    grid_dim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                block_idx = make_uint3(x, y, z);
                run_block();
            }
    L = nullptr;
}

// mma.m16n8k16 (row.col, bf16 inputs, fp32 accumulators), with the fragment layout of the PTX ISA ("Matrix
// Fragments for mma.m16n8k16 with floating point type"): groupID g = lane >> 2, t = lane % 4;
//   A (16x16): a0,a1 = A[g][2t, 2t+1], a2,a3 = A[g+8][2t, 2t+1], a4,a5 = A[g][2t+8, 2t+9], a6,a7 = A[g+8][2t+8, 2t+9]
//     (two per 32-bit register, the lower index in the lower half);
//   B (16x8):  b0,b1 = B[2t, 2t+1][g], b2,b3 = B[2t+8, 2t+9][g];
//   C/D (16x8): c0,c1 = C[g][2t, 2t+1], c2,c3 = C[g+8][2t, 2t+1].
// The products of bf16 values are exact in fp32; they are added in k order onto c (the tensor core's order and
// internal precision are not specified: this is one valid answer, not the hardware's bits).
static float bf16_lo(uint32_t w) { return __uint_as_float(w << 16); }
static float bf16_hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

void mma_m16n8k16_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    uint64_t *slot = warp_slots();
    const int me = lane();
    uint32_t *mine = (uint32_t *)&slot[me * 8];
    for (int i = 0; i < 4; i++) mine[i] = a[i];
    mine[4] = b0;
    mine[5] = b1;
    warp_sync(0xffffffffu);
    if (warp_arrived() != 0xffffffffu) die("mma.sync with lanes missing (%08x took part)", warp_arrived());
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; l++) {
        const uint32_t *f = (const uint32_t *)&slot[l * 8];
        int g = l >> 2, t = l & 3;
        A[g][2 * t] = bf16_lo(f[0]), A[g][2 * t + 1] = bf16_hi(f[0]);
        A[g + 8][2 * t] = bf16_lo(f[1]), A[g + 8][2 * t + 1] = bf16_hi(f[1]);
        A[g][2 * t + 8] = bf16_lo(f[2]), A[g][2 * t + 9] = bf16_hi(f[2]);
        A[g + 8][2 * t + 8] = bf16_lo(f[3]), A[g + 8][2 * t + 9] = bf16_hi(f[3]);
        B[2 * t][g] = bf16_lo(f[4]), B[2 * t + 1][g] = bf16_hi(f[4]);
        B[2 * t + 8][g] = bf16_lo(f[5]), B[2 * t + 9][g] = bf16_hi(f[5]);
    }
    warp_sync(0xffffffffu);
    const int g = me >> 2, t = me & 3;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int i = 0; i < 4; i++) {
        float acc = c[i];
        for (int k = 0; k < 16; k++) acc += A[rows[i]][k] * B[k][cols[i]];
        c[i] = acc;
    }
}

} // namespace cuemu

// ---- the CUDA runtime API, on host memory: one device, everything synchronous ----
using cuemu::die;

namespace {
std::mutex mem_mutex;
std::map<void *, size_t> allocations;
size_t allocated_bytes = 0;

size_t total_mem() {
    static size_t total = 0;
    if (!total) {
        const char *e = getenv("XR_CUEMU_MEM_GIB");
        total = (size_t)(e && atof(e) > 0 ? atof(e) : 140.0) * ((size_t)1 << 30);
    }
    return total;
}

struct Event {
    double t;
};

double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int device_count() {
    const char *e = getenv("XR_CUEMU_DEVICES"); // 0: emulate a machine without a GPU
    return e && *e ? atoi(e) : 1;
}
} // namespace

#define CUEMU_RET(e) return cuemu::last_error = (e)

extern "C" {

cudaError_t cudaGetLastError(void) {
    cudaError_t e = cuemu::last_error;
    cuemu::last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return cuemu::last_error; }

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error (cuemu)";
    case cudaErrorInvalidValue: return "invalid argument (cuemu)";
    case cudaErrorMemoryAllocation: return "out of memory (cuemu)";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument (cuemu)";
    case cudaErrorInvalidDevice: return "invalid device ordinal (cuemu)";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (cuemu: XR_CUEMU_DEVICES=0)";
    case cudaErrorNotReady: return "device not ready (cuemu)";
    default: return "error (cuemu)";
    }
}
const char *cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaGetDeviceCount(int *n) {
    *n = device_count();
    if (*n == 0) CUEMU_RET(cudaErrorNoDevice);
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
    if (d < 0 || d >= device_count()) CUEMU_RET(cudaErrorInvalidDevice);
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}

// H200-like figures (the code sizes tiles and grids by them; nothing here is timed)
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d) {
    if (d < 0 || d >= device_count()) CUEMU_RET(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu: CPU emulation of an H200-like device");
    p->totalGlobalMem = total_mem();
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->sharedMemPerMultiprocessor = 228 << 10;
    p->regsPerBlock = 65536;
    p->regsPerMultiprocessor = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsPerMultiProcessor = 2048;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->l2CacheSize = 50 << 20;
    p->memoryBusWidth = 6144;
    p->totalConstMem = 64 << 10;
    p->concurrentKernels = 1;
    p->unifiedAddressing = 1;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, d);
    if (e != cudaSuccess) return e;
    switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *v = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *v = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)p.sharedMemPerBlockOptin; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrL2CacheSize: *v = p.l2CacheSize; break;
    default: *v = 0; break;
    }
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n) {
    std::lock_guard<std::mutex> g(mem_mutex);
    *p = nullptr;
    if (allocated_bytes + n > total_mem()) CUEMU_RET(cudaErrorMemoryAllocation);
    // 256-byte aligned like the device allocator; poisoned (all ones: NaN in fp32 and bf16), as device memory holds
    // whatever was there before
    void *q = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
    if (!q) CUEMU_RET(cudaErrorMemoryAllocation);
    memset(q, 0xff, n);
    allocations[q] = n;
    allocated_bytes += n;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    std::lock_guard<std::mutex> g(mem_mutex);
    auto it = allocations.find(p);
    if (it == allocations.end()) die("cudaFree(%p): not a pointer cudaMalloc returned (double free?)", p);
    allocated_bytes -= it->second;
    allocations.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t n) {
    *p = malloc(n ? n : 1);
    if (!*p) CUEMU_RET(cudaErrorMemoryAllocation);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) {
    (void)flags;
    return cudaMallocHost(p, n);
}
cudaError_t cudaFreeHost(void *p) {
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_b, size_t *total_b) {
    std::lock_guard<std::mutex> g(mem_mutex);
    *total_b = total_mem();
    *free_b = total_mem() - allocated_bytes;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
    (void)kind;
    if (n && (!dst || !src)) CUEMU_RET(cudaErrorInvalidValue);
    if (n) memcpy(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t st) {
    (void)st;
    return cudaMemcpy(dst, src, n, kind);
}
cudaError_t cudaMemset(void *p, int v, size_t n) {
    if (n && !p) CUEMU_RET(cudaErrorInvalidValue);
    if (n) memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t st) {
    (void)st;
    return cudaMemset(p, v, n);
}

cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t *s) {
    *s = (cudaStream_t)malloc(16);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    (void)flags;
    return cudaStreamCreate(s);
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
    free((void *)s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    (void)s;
    return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    (void)s, (void)e, (void)flags;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) {
    *e = (cudaEvent_t) new Event{now_ms()};
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    (void)flags;
    return cudaEventCreate(e);
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
    delete (Event *)e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    (void)s;
    ((Event *)e)->t = now_ms();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
    (void)e;
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
    (void)e;
    return cudaSuccess;
}
// host time between the records: the emulator's time, not the GPU's
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    *ms = (float)(((Event *)b)->t - ((Event *)a)->t);
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v) {
    (void)f, (void)a;
    if (v < 0 || v > 227 * 1024) CUEMU_RET(cudaErrorInvalidValue);
    return cudaSuccess;
}

// cuDNN: only its version is asked (the build reports it)
size_t cudnnGetVersion(void) { return CUDNN_VERSION; }

} // extern "C"
