// ops_cuda_table.cu: the CUDA backend's table of ops: one line per op it implements (cuda_ops_<name>, declared
// from core/ops_list.h in ops_cuda.h). An op of the list without a line here is one this backend lacks:
// ops_backend_missing / ops_device_missing name it, and ops_<name> on this backend dies naming it.
// Adding a CUDA kernel for an op: define cuda_ops_<name> in a .cu file of core/cuda and add its line below.
#include "cuda/ops_cuda.h"
#include "ops_table.h"

static OpsTable cuda_table_fill(void) {
    OpsTable t = {};
    // memory
    t.alloc = cuda_ops_alloc;
    t.free = cuda_ops_free;
    t.to_device = cuda_ops_to_device;
    t.to_host = cuda_ops_to_host;
    t.pinned_alloc = cuda_ops_pinned_alloc;
    t.pinned_free = cuda_ops_pinned_free;
    t.to_device_async = cuda_ops_to_device_async;
    t.sync = cuda_ops_sync;
    // inference
    t.gemm = cuda_ops_gemm;
    t.linear = cuda_ops_linear;
    t.embed = cuda_ops_embed;
    t.layernorm = cuda_ops_layernorm;
    t.gelu = cuda_ops_gelu;
    t.tanh = cuda_ops_tanh;
    t.attention = cuda_ops_attention;
    t.attention_first = cuda_ops_attention_first;
    t.pool_first = cuda_ops_pool_first;
    t.pool_mean = cuda_ops_pool_mean;
    t.l2norm = cuda_ops_l2norm;
    t.act_pack = cuda_ops_act_pack;
    t.act_unpack = cuda_ops_act_unpack;
    t.act_region = cuda_ops_act_region;
    t.infer_weights = cuda_ops_infer_weights;
    // training (train_ops.cu)
    t.dropout_add = cuda_ops_dropout_add;
    t.attention_train = cuda_ops_attention_train;
    t.attention_backward = cuda_ops_attention_backward;
    t.attention_train_lse = cuda_ops_attention_train_lse;
    t.attention_backward_lse = cuda_ops_attention_backward_lse;
    t.linear_backward = cuda_ops_linear_backward;
    t.embed_backward = cuda_ops_embed_backward;
    t.layernorm_backward = cuda_ops_layernorm_backward;
    t.gelu_backward = cuda_ops_gelu_backward;
    t.tanh_backward = cuda_ops_tanh_backward;
    t.pool_first_backward = cuda_ops_pool_first_backward;
    t.pool_mean_backward = cuda_ops_pool_mean_backward;
    t.l2norm_backward = cuda_ops_l2norm_backward;
    t.zero = cuda_ops_zero;
    t.scale = cuda_ops_scale;
    t.sum_squares = cuda_ops_sum_squares;
    t.adamw = cuda_ops_adamw;
    t.dropout_add_layernorm = cuda_ops_dropout_add_layernorm;
    t.dropout_add_layernorm_backward = cuda_ops_dropout_add_layernorm_backward;
    t.gelu_bias_backward = cuda_ops_gelu_bias_backward;
    t.linear_gelu = cuda_ops_linear_gelu;
    t.bf16_weights = cuda_ops_bf16_weights;
    t.weights_refresh = cuda_ops_weights_refresh;
    t.act_precision = cuda_ops_act_precision;
    // search (knn_search.cu; knn_gemm, the CPU search's screening product, stays CPU-only)
    t.knn_screen = cuda_ops_knn_screen;
    t.knn_rescore = cuda_ops_knn_rescore;
    t.to_bf16 = cuda_ops_to_bf16;
    return t;
}

extern "C" const OpsTable *cuda_ops_table(void) {
    static const OpsTable table = cuda_table_fill();
    return &table;
}
