/* ops_list.h: the op table: every op of the API, once, with its contract. No include guard: each includer
 * defines XR_OP / XR_OP_RET, includes this file, and gets one line per op:
 *   XR_OP(set, name, (params), (args))            void ops_<name>(params)
 *   XR_OP_RET(set, type, name, (params), (args))  type ops_<name>(params)
 * params always start with `Backend *be`; args are the same names, in order (the dispatch forwards them).
 * set is the op set it belongs to (XR_OPSET_<set> in ops.h): BASE, INFER, TRAIN or SEARCH.
 * From this list come: the declarations of ops_<name> (ops.h), the backend table OpsTable (ops_table.h), the
 * dispatch and the "which ops does this backend lack" check (ops.c), the CPU prototypes cpu_<name> (cpu_ops.h,
 * every op: the CPU backend is the reference) and the CUDA prototypes cuda_ops_<name> (cuda/ops_cuda.h).
 * Adding an op: its contract and one entry here, cpu_<name> in core/cpu, optionally cuda_ops_<name> in
 * core/cuda plus one line in core/cuda/ops_cuda_table.cu, and its test. Nothing else.
 *
 * Every pointer given to an op lives on the backend's device (host memory for the CPU backend). Forward ops
 * are pure: they write only their outputs, and optionally save what a backward pass needs. */

/* ---- memory (CPU: 64-byte aligned host memory; CUDA: device memory) ---- */

/* Allocation failure dies with the size. */
XR_OP_RET(BASE, void *, alloc, (Backend *be, size_t bytes), (be, bytes))
/* p may be NULL. */
XR_OP(BASE, free, (Backend *be, void *p), (be, p))
/* Synchronous copies between host memory and the backend's memory. */
XR_OP(BASE, to_device, (Backend *be, void *dst, const void *src, size_t bytes), (be, dst, src, bytes))
XR_OP(BASE, to_host, (Backend *be, void *dst, const void *src, size_t bytes), (be, dst, src, bytes))
/* Host staging memory the backend copies from without a bounce (CUDA: page-locked, cudaHostAlloc; CPU: aligned
 * host memory). Not device memory: not in ops_mem_stats. Allocation failure dies with the size; p may be NULL. */
XR_OP_RET(BASE, void *, pinned_alloc, (Backend *be, size_t bytes), (be, bytes))
XR_OP(BASE, pinned_free, (Backend *be, void *p), (be, p))
/* Queues a host-to-device copy behind the ops already queued and returns at once, so the host goes on (packing
 * the next batch, queuing kernels) while the device works. src must be ops_pinned_alloc memory and must not
 * change until the queue has reached the copy: after ops_sync, ops_to_host or ops_free. CPU: a plain copy. */
XR_OP(BASE, to_device_async, (Backend *be, void *dst, const void *src, size_t bytes), (be, dst, src, bytes))
/* Waits until every op queued on the backend has run (CPU: returns at once). */
XR_OP(BASE, sync, (Backend *be), (be))

/* ---- dense algebra (row-major everywhere) ---- */

/* C[M,N] = alpha * op(A) op(B) + beta * C, op(X) = X or X^T; lda/ldb/ldc are row strides as stored. */
XR_OP(INFER, gemm,
      (Backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
       const float *B, int ldb, float beta, float *C, int ldc),
      (be, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
/* nn.Linear: y[M,N] = x[M,K] W[N,K]^T + b[N] (b may be NULL). y must not alias x. */
XR_OP(INFER, linear, (Backend *be, float *y, const float *x, const float *W, const float *b, int M, int N, int K),
      (be, y, x, W, b, M, N, K))

/* ---- token-wise ops (n rows of width H) ---- */

/* out[i] = word[ids[i]] + pos[pos_ids[i]] + type[types[i]] (types may be NULL: row 0). Indices are trusted:
 * the model validates them against the table sizes before calling. */
XR_OP(INFER, embed,
      (Backend *be, float *out, const int32_t *ids, const int32_t *pos_ids, const int32_t *types, const float *word,
       const float *pos, const float *type, int n, int H),
      (be, out, ids, pos_ids, types, word, pos, type, n, H))
/* out = LayerNorm(x + res) * g + b per row (res may be NULL; out may alias x or res). mean/rstd [n] are saved
 * for the backward pass when non-NULL. Biased variance, eps inside the square root, as torch. */
XR_OP(INFER, layernorm,
      (Backend *be, float *out, float *mean, float *rstd, const float *x, const float *res, const float *g,
       const float *b, int n, int H, float eps),
      (be, out, mean, rstd, x, res, g, b, n, H, eps))
/* Exact GELU 0.5 x (1 + erf(x / sqrt 2)), elementwise; out may alias x. */
XR_OP(INFER, gelu, (Backend *be, float *out, const float *x, size_t n), (be, out, x, n))
XR_OP(INFER, tanh, (Backend *be, float *out, const float *x, size_t n), (be, out, x, n))

/* ---- attention over packed (unpadded) sequences ----
 * Sequence s owns rows seq_off[s] .. seq_off[s+1]-1 (seq_off has S+1 entries, seq_off[0] = 0); only tokens of
 * the same sequence attend to each other, so padding never enters the computation.
 * qkv [N, 3*NH*dh]: each row is q | k | v, head h at columns h*dh of each part (one fused QKV projection).
 * out [N, NH*dh]: softmax(q k^T / sqrt(dh)) v per head. att: when non-NULL, the probabilities are saved for
 * the backward pass, sequence s's [NH, L, L] block at offset NH * sum_{r<s} L_r^2. max_len = max_s L_s. */
XR_OP(INFER, attention,
      (Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S, int max_len, int NH,
       int dh),
      (be, out, att, qkv, seq_off, S, max_len, NH, dh))
/* The same for the first query row of each sequence only (its [CLS] / <s>), all rows as keys and values:
 * out [S, NH*dh]. The last layer uses it when only the first token's output is needed (scores, CLS
 * pooling), which is exact and skips most of that layer's work. */
XR_OP(INFER, attention_first,
      (Backend *be, float *out, const float *qkv, const int32_t *seq_off, int S, int max_len, int NH, int dh),
      (be, out, qkv, seq_off, S, max_len, NH, dh))

/* ---- pooling over packed sequences (rows seq_off[s] .. seq_off[s+1]-1) ---- */

/* out[s] = x[seq_off[s]] (the first token: [CLS] / <s>). */
XR_OP(INFER, pool_first, (Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H),
      (be, out, x, seq_off, S, H))
/* out[s] = mean of the rows of sequence s. */
XR_OP(INFER, pool_mean, (Backend *be, float *out, const float *x, const int32_t *seq_off, int S, int H),
      (be, out, x, seq_off, S, H))
/* out[i] = x[i] / max(||x[i]||_2, 1e-12) per row, as torch.nn.functional.normalize; out may alias x. */
XR_OP(INFER, l2norm, (Backend *be, float *out, const float *x, int n, int H), (be, out, x, n, H))

/* ---- packed activation storage of the inference forward (issue 13) ----
 * act_pack asks the backend to store the inference forward's activations as bf16 (2 bytes) from now on (on 1) or as
 * fp32 (on 0), and returns the bytes per element the following INFER ops use for their ACTIVATION arguments: 2 when
 * the backend packs, else 4 (a backend may decline: the CPU backend unless its test capability is on,
 * cpu_set_act_pack_able; the CUDA backend outside bf16 GEMM mode, with XR_CUDA_BF16_GEMM=fast, or without
 * XR_CUDA_ACT_PACK=1). While packed, every activation argument of the INFER ops is the address (still typed float *)
 * of an array of bf16 values with the argument's element count: embed's out; layernorm's x, res, out; linear's x, y;
 * gelu's and tanh's x, out; attention's qkv, out (att must be NULL); attention_first's qkv, out; pool_first's and
 * pool_mean's x, out; l2norm's x, out. Each op computes as in fp32 from the bf16 values and rounds what it stores to
 * bf16 (nearest even); weights, biases, LayerNorm statistics (mean, rstd: fp32), indices and gemm's operands stay as
 * they are. So a packed op's result is the fp32 op's on the same (bf16-valued) inputs rounded once, up to the
 * backend's own fp32 rounding and, for the GPU's linear, its bf16 GEMM: W and b read rounded to bf16 (cuBLASLt's
 * bias epilogue takes the output's type; PyTorch's autocast rounds the bias too), fp32 sums. TRAIN ops die while packed. The model packs
 * only a pure inference encoder's forward and ends it with act_pack(0) (model_forward.c). */
XR_OP_RET(INFER, int, act_pack, (Backend *be, int on), (be, on))
/* out[i] = x[i] as fp32, x in its activation storage (bf16 where packed, ops_act_packed_at; a copy when fp32), i < n. out is
 * fp32 whatever the storage; out and x must not overlap. */
XR_OP(INFER, act_unpack, (Backend *be, float *out, const float *x, size_t n), (be, out, x, n))
/* Packed regions (issue 13: bf16 training's saved activations in 2 bytes). act_region(be, base, bytes) registers the
 * device memory [base, base + bytes) as packed activation storage and returns 2, or declines and returns 4 (nothing
 * registered: the CPU backend unless its test capability is on, cpu_set_act_pack_able, the same one act_pack
 * asks; the CUDA backend unless XR_CUDA_TRAIN_PACK=1 with the working copy registered, default 0 until its GPU check
 * has passed; a mix an op is not built for dies naming the op). base NULL: a question, what
 * it would answer, nothing registered. bytes 0: forgets the region starting at base (none there: nothing). Regions
 * must not overlap; at most XR_ACT_REGIONS at once; the caller forgets a region before freeing its memory.
 * ONE rule says where an op's activation argument is bf16 (ops_act_packed_at, ops.h): at an address inside a
 * registered region, or anywhere while act_pack is on (the inference forward: every activation argument). So the
 * format follows the buffer, argument by argument, whatever the phase: a linear reads a packed x and writes fp32
 * logits, a linear_backward reads a packed saved x with an fp32 dy, and a dropout_add applied to a gradient
 * (never registered) stays fp32. Packed in a region, as under act_pack, an op computes as in fp32 from the
 * bf16 values and rounds each value it stores there to bf16 (nearest even), whatever the act_precision; fp32
 * arguments are read and written as always. So a packed step gives the bits of the step that stores the same values
 * bf16-valued in fp32 words (act_precision BF16: what the GPU stores is already bf16): a layout change only.
 * The activation arguments that may lie in a region: act_pack's list above, plus dropout_add's out, x, res;
 * attention_train's and attention_train_lse's qkv, out (att / lse stay fp32); attention_backward's and _lse's qkv;
 * linear_backward's x; layernorm_backward's x; gelu_backward's and gelu_bias_backward's x; tanh_backward's y;
 * l2norm_backward's x; dropout_add_layernorm's x, res, out, v and its backward's v; linear_gelu's x, g, f;
 * act_unpack's x. Everything else (gradients, statistics, probabilities, parameters, indices, gemm's operands) must
 * not. The model packs bf16 training's saved activations (model_train.c) when the backend agrees. */
XR_OP_RET(INFER, int, act_region, (Backend *be, const void *base, size_t bytes), (be, base, bytes))
/* w[0, n): weights an inference forward's ops_linear reads (W and b), which stay unchanged until the caller forgets
 * them: the backend may keep a copy derived from them for the GEMMs (CUDA in bf16 GEMM mode with XR_CUDA_ACT_PACK=1:
 * a bf16 copy, read instead of casting W and b on every call; the values are the cast's, so no result changes). One
 * range per backend: another range replaces it, the same range again costs nothing. n 0: forgets the range starting
 * at w if it is the one held; w NULL: forgets whatever is held. The CPU backend keeps nothing. */
XR_OP(INFER, infer_weights, (Backend *be, const float *w, size_t n), (be, w, n))

/* ---- training: dropout, backward passes, optimizer arithmetic ----
 * Backward ops take the gradient of the op's output (d<out>) and what the forward saved. Gradients of
 * parameters always accumulate (+=) into their buffers, so micro-batches add up; gradients of activations
 * overwrite unless an `accumulate` flag says otherwise. Results depend only on the inputs, never on the
 * number of threads or the launch configuration: reductions over tokens run per column in a fixed order, never
 * with atomics. Both backends implement them (core/cpu/cpu_train.c, core/cuda/train_ops.cu). */

/* out = res + dropout(x) over token rows: with seq_off, the packed rows seq_off[0] .. seq_off[S]-1 (row k of
 * sequence s has position k - seq_off[s]); with seq_off NULL, S rows, row s being sequence s's first token
 * (position 0). res may be NULL (out = dropout(x)); d NULL or d->p == 0: no dropout. out may alias x or res.
 * Applied to a gradient with the same d it is its own backward pass. The mask: XrDropout in ops.h. */
XR_OP(TRAIN, dropout_add,
      (Backend *be, float *out, const float *x, const float *res, const int32_t *seq_off, int S, int H,
       const XrDropout *d),
      (be, out, x, res, seq_off, S, H, d))
/* Attention for training: like ops_attention (first_only 0) or ops_attention_first (first_only 1) with the
 * probabilities saved in att for the backward pass, and dropout on them (d may be NULL) as transformers does
 * (ctx = dropout(softmax) v, mask position: query row | head << 16 per sequence). att holds the probabilities
 * before dropout, sequence s's block [NH, nq, L] (nq = L, or 1 with first_only) at offset
 * NH * sum_{r<s} nq_r L_r. out is [N, H] or, with first_only, [S, H]. CUDA: exact warp-per-row kernels, or with
 * XR_CUDA_TRAIN_ATTENTION=gemm batched GEMMs over padded (sequence, head) blocks (core/att_gemm.h; fp32, or bf16
 * operands in bf16 training, "training precision" below), the same results up to summation order; exact is the
 * default until the GEMM path passes its GPU check. */
XR_OP(TRAIN, attention_train,
      (Backend *be, float *out, float *att, const float *qkv, const int32_t *seq_off, int S, int max_len, int NH,
       int dh, int first_only, const XrDropout *d),
      (be, out, att, qkv, seq_off, S, max_len, NH, dh, first_only, d))
/* Its backward: dqkv [N, 3H] (overwritten; with first_only the query part of non-first rows is 0) from
 * dout ([N, H], or [S, H] with first_only), the forward's qkv and att, and the same dropout d. */
XR_OP(TRAIN, attention_backward,
      (Backend *be, float *dqkv, const float *dout, const float *qkv, const float *att, const int32_t *seq_off,
       int S, int max_len, int NH, int dh, int first_only, const XrDropout *d),
      (be, dqkv, dout, qkv, att, seq_off, S, max_len, NH, dh, first_only, d))
/* Attention for training without the probability matrix (flash-style): the same output as attention_train
 * (same dropout mask, same position), but instead of att it saves lse [nq_total, NH]: the natural log of the
 * softmax denominator of each (query row, head), lse = max_j s_j + log sum_j exp(s_j - max_j s_j) with
 * s = q k^T / sqrt(dh), row index = the query's token row (first_only 0: [N, NH]) or its sequence (first_only 1:
 * [S, NH]). Empty sequences write nothing. CUDA: as attention_train, exact warp-per-row kernels or with
 * XR_CUDA_TRAIN_ATTENTION=gemm the batched GEMMs (core/att_gemm.h; the backward recomputes the scores with the
 * forward's GEMM per chunk of blocks), the same results up to summation order. */
XR_OP(TRAIN, attention_train_lse,
      (Backend *be, float *out, float *lse, const float *qkv, const int32_t *seq_off, int S, int max_len, int NH,
       int dh, int first_only, const XrDropout *d),
      (be, out, lse, qkv, seq_off, S, max_len, NH, dh, first_only, d))
/* Its backward: as attention_backward, the probabilities recomputed as P = exp(s - lse) from qkv and lse, the
 * dropout mask drawn again from its counter, D_i = sum_j P_ij dP_ij from the recomputed row. dqkv overwritten.
 * Agrees with attention_backward to the bound tests/test_attention_lse.c derives (recomputing P moves it by at
 * most a relative (2 max|s| + 2 max|lse| + 2 L + 16) u, u = 2^-24). */
XR_OP(TRAIN, attention_backward_lse,
      (Backend *be, float *dqkv, const float *dout, const float *qkv, const float *lse, const int32_t *seq_off,
       int S, int max_len, int NH, int dh, int first_only, const XrDropout *d),
      (be, dqkv, dout, qkv, lse, seq_off, S, max_len, NH, dh, first_only, d))
/* nn.Linear backward for y = x W^T + b: dx[M,K] = dy W (overwrite, or += with accumulate_dx; dx NULL: skip),
 * dW[N,K] += dy^T x, db[N] += column sums of dy (db NULL: no bias). */
XR_OP(TRAIN, linear_backward,
      (Backend *be, float *dx, float *dW, float *db, const float *dy, const float *x, const float *W, int M, int N,
       int K, int accumulate_dx),
      (be, dx, dW, db, dy, x, W, M, N, K, accumulate_dx))
/* Embedding backward: dword[ids[i]] += dout[i], dpos[pos_ids[i]] += dout[i], dtype[types[i]] += dout[i]
 * (types NULL: row 0; dtype NULL: skipped). Column ranges per thread: deterministic, no atomics. */
XR_OP(TRAIN, embed_backward,
      (Backend *be, float *dword, float *dpos, float *dtype, const float *dout, const int32_t *ids,
       const int32_t *pos_ids, const int32_t *types, int n, int H),
      (be, dword, dpos, dtype, dout, ids, pos_ids, types, n, H))
/* LayerNorm backward. x is the LayerNorm's input (x + res of the forward, which the caller keeps), mean/rstd
 * what the forward saved. dx = d(out)/d(input) (overwrite, or += with accumulate); dg, db accumulate.
 * dx may alias dout. */
XR_OP(TRAIN, layernorm_backward,
      (Backend *be, float *dx, float *dg, float *db, const float *dout, const float *x, const float *mean,
       const float *rstd, const float *g, int n, int H, int accumulate),
      (be, dx, dg, db, dout, x, mean, rstd, g, n, H, accumulate))
/* dx = dy * GELU'(x) with the exact derivative Phi(x) + x phi(x); dx may alias dy. */
XR_OP(TRAIN, gelu_backward, (Backend *be, float *dx, const float *x, const float *dy, size_t n), (be, dx, x, dy, n))
/* dx = dy * (1 - y^2) from the forward's output y; dx may alias dy. */
XR_OP(TRAIN, tanh_backward, (Backend *be, float *dx, const float *y, const float *dy, size_t n), (be, dx, y, dy, n))
/* Pooling backward: dx[seq_off[s]] += dout[s] (first token), dx[rows of s] += dout[s] / L_s (mean). */
XR_OP(TRAIN, pool_first_backward,
      (Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H), (be, dx, dout, seq_off, S, H))
XR_OP(TRAIN, pool_mean_backward,
      (Backend *be, float *dx, const float *dout, const int32_t *seq_off, int S, int H), (be, dx, dout, seq_off, S, H))
/* L2 normalisation backward from the forward's input x: dx = (dy - y (y . dy)) / max(||x||, 1e-12)
 * (dy / 1e-12 where the norm is clamped); dx may alias dy. */
XR_OP(TRAIN, l2norm_backward, (Backend *be, float *dx, const float *dy, const float *x, int n, int H),
      (be, dx, dy, x, n, H))
/* x[0..n) = 0. */
XR_OP(TRAIN, zero, (Backend *be, float *x, size_t n), (be, x, n))
/* x *= alpha. */
XR_OP(TRAIN, scale, (Backend *be, float *x, size_t n, float alpha), (be, x, n, alpha))
/* Sum of squares in double, summed in fixed chunks and a fixed order (independent of threads). */
XR_OP_RET(TRAIN, double, sum_squares, (Backend *be, const float *x, size_t n), (be, x, n))
/* One torch.optim.AdamW step (single-tensor path, torch's order of operations) on n parameters:
 * p *= 1 - lr*wd (when wd != 0); m = lerp(m, g, 1 - beta1); v = v*beta2 + (1 - beta2) g^2;
 * p += (-lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), bc1 = 1 - beta1^step, bc2 = 1 - beta2^step (step >= 1,
 * counted including this one). Scalars are computed in double as Python does, then used as fp32. */
XR_OP(TRAIN, adamw,
      (Backend *be, float *p, const float *g, float *m, float *v, size_t n, double lr, double beta1, double beta2,
       double eps, double wd, int64_t step),
      (be, p, g, m, v, n, lr, beta1, beta2, eps, wd, step))

/* ---- fused training ops (issue 13): one pass over the rows where the unfused sequence takes several ----
 * Each is defined as a sequence of the ops above and gives that sequence's results: the CPU backend runs the
 * sequence itself (core/cpu/cpu_fused.c), so CPU training is bit-identical with or without fusion; the CUDA kernels
 * (core/cuda/train_ops.cu) do it in one pass, with the same dropout masks and reductions in a fixed order. */

/* The residual + LayerNorm of a transformer sublayer: v = res + dropout(x), out = LayerNorm(v) * g + b; that is,
 * ops_dropout_add(v, x, res, seq_off, S, H, d) then ops_layernorm(out, mean, rstd, v, NULL, g, b, n, H, eps).
 * Rows as dropout_add's, and n of them: with seq_off the packed rows 0 .. n-1 (seq_off[0] = 0, seq_off[S] = n),
 * with seq_off NULL n = S rows, row s being sequence s's first token. Saves what the backward reads: v (the
 * LayerNorm's input) and mean/rstd [n], none of them NULL; the dropout mask is not stored (the backward draws it
 * again from d). res may be NULL; v and out may alias x or res, never each other. */
XR_OP(TRAIN, dropout_add_layernorm,
      (Backend *be, float *out, float *v, float *mean, float *rstd, const float *x, const float *res, const float *g,
       const float *b, const int32_t *seq_off, int S, int n, int H, float eps, const XrDropout *d),
      (be, out, v, mean, rstd, x, res, g, b, seq_off, S, n, H, eps, d))
/* Its backward from dout (the gradient of out), the forward's v, mean, rstd and the same d: dres = the gradient
 * of v, which reaches res (overwrite); dx = dropout(dres), the gradient of x (overwrite); dg, db accumulate. That
 * is, ops_layernorm_backward(dres, dg, db, dout, v, mean, rstd, g, n, H, 0) then
 * ops_dropout_add(dx, dres, NULL, seq_off, S, H, d). dres may alias dout; dx aliases neither. */
XR_OP(TRAIN, dropout_add_layernorm_backward,
      (Backend *be, float *dres, float *dx, float *dg, float *db, const float *dout, const float *v, const float *mean,
       const float *rstd, const float *g, const int32_t *seq_off, int S, int n, int H, const XrDropout *d),
      (be, dres, dx, dg, db, dout, v, mean, rstd, g, seq_off, S, n, H, d))
/* The backward of GELU over the output y[M, N] = x W^T + b of a linear layer, with that layer's bias gradient:
 * dx = dy * GELU'(x) as ops_gelu_backward, and db[N] += the column sums of dx, as ops_linear_backward's db would
 * add for dy = dx (the same fixed-order sums; db NULL: none). Then ops_linear_backward with db NULL finishes the
 * layer. dx may alias dy. */
XR_OP(TRAIN, gelu_bias_backward, (Backend *be, float *dx, float *db, const float *x, const float *dy, int M, int N),
      (be, dx, db, x, dy, M, N))

/* The first linear of a feed-forward block with its GELU: f = x W^T + b, then g = GELU(f) (exact erf); that is,
 * ops_linear(f, x, W, b, M, N, K) then ops_gelu(g, f, M * N), each storing in the activations' precision. f (the
 * GELU's input, which ops_gelu_bias_backward reads) and g are both written; neither may alias x or the other. The
 * CUDA backend adds the bias and applies GELU in one pass over the GEMM's output (cuBLASLt's GELU epilogue is the
 * tanh approximation, not erf), writing g's bf16 copy for the next GEMM when activations are stored in bf16. */
XR_OP(TRAIN, linear_gelu,
      (Backend *be, float *g, float *f, const float *x, const float *W, const float *b, int M, int N, int K),
      (be, g, f, x, W, b, M, N, K))

/* ---- training precision (issue 13): what the GPU stores in bf16, as one contract for both backends ----
 * XR_PREC_BF16 training keeps the flat parameter buffer (the optimizer's fp32 master weights, AdamW moments fp32
 * too) and a bf16 working copy of it that every GEMM reads, refreshed once per optimizer step; activations are
 * stored in bf16 between ops; GEMMs and reductions accumulate in fp32; LayerNorm statistics, attention
 * probabilities, gradients of activations and of parameters, logits and loss stay fp32. The CUDA backend stores
 * bf16 (2 bytes); the CPU backend emulates it: fp32 words holding the value rounded to nearest-even bf16 wherever
 * the GPU would store bf16, so the whole bf16 step runs and is tested on the CPU.
 * The training attention's products take bf16 operands too, as the linears' (and PyTorch autocast's matmuls): while
 * a working copy is registered (ops_bf16_weights; the condition ops_linear rounds its operands under, which holds in
 * the backward too, where the activation storage is fp32), attention_train / attention_train_lse compute the
 * scores from bf16(q) bf16(k) and the context as bf16(Pd) bf16(v), Pd = dropout(P); the softmax, P saved in att
 * and lse stay fp32. attention_backward / _lse: dPd = bf16(dO) bf16(v)^T, dV = bf16(Pd)^T bf16(dO) (Pd as in the
 * forward), dP = dropout(dPd), D_i = sum_j P_ij dP_ij and dS = P (dP - D_i) in fp32, dQ = scale bf16(dS) bf16(k),
 * dK = scale bf16(dS)^T bf16(q); the gradients written fp32. Each product accumulates in fp32. Without a working
 * copy (fp32 training, bf16 storage alone included) nothing of the attention is rounded but its stored context; the
 * inference ops (attention, attention_first) keep their definition in both modes. */
/* Keeps a bf16 working copy of master[0, n) (the flat parameter buffer) and fills it; from now on ops_linear
 * and ops_linear_backward read any W inside master from the copy and round their activation operands (x, dy)
 * to bf16 (products and sums in fp32), and the training attention rounds its products' operands (above). master
 * NULL: drops the copy (fp32 GEMMs again). */
XR_OP(TRAIN, bf16_weights, (Backend *be, const float *master, size_t n), (be, master, n))
/* Re-rounds the working copy from master after an optimizer step (the one place weights are re-cast, never per
 * GEMM). Returns how many fills the copy has had (ops_bf16_weights counts one); 0 without a copy. */
XR_OP_RET(TRAIN, int64_t, weights_refresh, (Backend *be), (be))
/* Storage precision of the activations the following forward ops write (embed, layernorm's output, gelu, tanh,
 * linear, attention / attention_train's output, dropout_add, the poolings): BF16 rounds each stored value to
 * bf16 (nearest even); FP32 (the default) stores fp32. The model switches to FP32 for the logits. */
XR_OP(TRAIN, act_precision, (Backend *be, XrPrecision p), (be, p))

/* ---- search (mining/knn.c) ---- */

/* The screening product of exact k-NN search: S[n, m] = P[n, dim] Q[m, dim]^T, row j of S being passage j
 * against every query (row stride m). Its rounding depends on the kernel and the shapes (on the CPU: the GEMM
 * that ops_linear runs, see ops_cpu_gemm_kernel), so it is a filter whose survivors the caller rescores.
 * The one op that several threads may call at once on one backend: `worker` (0 .. ops_get_threads(be) - 1)
 * names the calling thread of the caller's parallel loop; calls with different workers may overlap, each
 * runs on its calling thread alone with that worker's own scratch. */
XR_OP(SEARCH, knn_gemm,
      (Backend *be, float *S, const float *P, int n, const float *Q, int m, int dim, int worker),
      (be, S, P, n, Q, m, dim, worker))

/* One passage tile of an exact top-k search held on a device (mining/knn_device.c). Each of m queries keeps a
 * running list of kk candidates, list_s / list_i [m, kk] (screening score, global passage index; index -1 =
 * empty slot, score -INFINITY; in no particular order). The op replaces every query's list by the kk best of
 * (its list + the tile) by screening score: the tile is P [n, dim] whose row j is passage base + j, and the
 * screening score of (q, j) is Q[q] . P[j] from a GEMM with fp32 accumulation, inputs fp32 (bf16 = 0) or bf16
 * (bf16 = 1: Q and P hold __nv_bfloat16 / uint16 bf16 values; CUDA only, the CPU backend dies). The GEMM's
 * rounding depends on the device and the shapes, and ties at the kk-th score may go either way: the lists are a
 * filter whose survivors the caller rescores exactly (knn_rescore) and checks against the rounding bound. What
 * holds on every backend: every candidate dropped has a screening score <= every score kept, and real
 * candidates are kept before empty slots. Uses backend scratch of about m * (n + kk) * 12 bytes. */
XR_OP(SEARCH, knn_screen,
      (Backend *be, float *list_s, int64_t *list_i, int kk, const void *Q, int m, const void *P, int n, int64_t base,
       int dim, int bf16),
      (be, list_s, list_i, kk, Q, m, P, n, base, dim, bf16))
/* out[i] = x[i] rounded to bf16, nearest with ties to even (core/bf16_bits.h, the host's rounding bit for bit),
 * i < n: the bf16 screening operands made on the device from the fp32 rows already there. out: n uint16 bf16
 * words; out and x must not overlap. Elementwise, deterministic. */
XR_OP(SEARCH, to_bf16, (Backend *be, uint16_t *out, const float *x, size_t n), (be, out, x, n))
/* Exact scores of candidates: every entry of idx [m, kk] with base <= idx < base + n gets
 * out[q * kk + j] = knn_exact_dot(Q[q], P[idx - base]) (core/knn_exact.h: the bits of the CPU search's
 * knn_score on every backend); the other entries of out are left as they are. Q [m, dim], P [n, dim] fp32. */
XR_OP(SEARCH, knn_rescore,
      (Backend *be, float *out, const int64_t *idx, int kk, const float *Q, int m, const float *P, int n,
       int64_t base, int dim),
      (be, out, idx, kk, Q, m, P, n, base, dim))
