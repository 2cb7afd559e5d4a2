# Declarations of csrc/fastcnn.h and csrc/gemm/gemm.h for the Cython bindings.
from libc.stdint cimport int32_t, int64_t
cimport numpy as cnp

cdef extern from "fastcnn.h" nogil:
    int FASTCNN_OK
    int FASTCNN_ENOMEM

    int fastcnn_threads_for(int64_t work, int nthreads)
    int fastcnn_openmp_enabled()
    int fastcnn_forked_child()
    int fastcnn_pool_check(int64_t chunks, int nthreads, int jobs)
    void fastcnn_pool_rest()
    void *fastcnn_block_get(size_t n)
    void fastcnn_block_put(void *p)
    void *fastcnn_block_resize(void *p, size_t n)
    int64_t fastcnn_blocks_release()
    void fastcnn_blocks_stats(int64_t out[5])
    int fastcnn_isa()
    int fastcnn_cpu_isa()
    const char *fastcnn_isa_name(int isa)

    void batchnorm2d_forward_train(float *y, float *mean, float *var, float *invstd,
                                   const float *x, const float *gamma, const float *beta,
                                   int64_t N, int64_t C, int64_t HW, double eps, int nthreads)
    void batchnorm2d_forward_eval(float *y, const float *x, const float *mean, const float *var,
                                  const float *gamma, const float *beta, int64_t N, int64_t C,
                                  int64_t HW, double eps, int nthreads)
    void batchnorm2d_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *mean, const float *invstd,
                              const float *gamma, int64_t N, int64_t C, int64_t HW, int nthreads)
    void batchnorm2d_forward_train_ref(float *y, float *mean, float *var, float *invstd,
                                       const float *x, const float *gamma, const float *beta,
                                       int64_t N, int64_t C, int64_t HW, double eps)
    void batchnorm2d_forward_eval_ref(float *y, const float *x, const float *mean,
                                      const float *var, const float *gamma, const float *beta,
                                      int64_t N, int64_t C, int64_t HW, double eps)
    void batchnorm2d_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                                  const float *x, const float *mean, const float *invstd,
                                  const float *gamma, int64_t N, int64_t C, int64_t HW)
    int batchnorm2d_set_stream(int mode)
    void batchnorm2d_update_running(float *running_mean, float *running_var, const float *mean,
                                    const float *var, int64_t C, int64_t count, double momentum)
    void batchnorm2d_fold(float *wf, float *bf, const float *w, const float *b,
                          const float *gamma, const float *beta, const float *mean,
                          const float *var, int64_t K, int64_t CRS, double eps, int nthreads)

    enum:
        POINTWISE_TANH, POINTWISE_LEAKY_RELU, POINTWISE_HARDTANH, POINTWISE_HARDSIGMOID,
        POINTWISE_HARDSWISH, POINTWISE_SILU, POINTWISE_GELU, POINTWISE_GELU_TANH
    void pointwise_forward(int kind, float *y, const float *x, int64_t n, float a, float b,
                           int nthreads)
    void pointwise_backward(int kind, float *dx, const float *dy, const float *x, int64_t n,
                            float a, float b, int nthreads)

    void add_forward(float *y, const float *a, const float *b, int64_t n, int nthreads)
    void add_accumulate(float *y, const float *x, int64_t n, int nthreads)
    void copy_floats(float *y, const float *x, int64_t n, int nthreads)
    void add_forward_ref(float *y, const float *a, const float *b, int64_t n)
    void add_accumulate_ref(float *y, const float *x, int64_t n)
    void mul_forward(float *y, const float *a, const float *b, int64_t n, int nthreads)
    void mul_forward_ref(float *y, const float *a, const float *b, int64_t n)
    enum: MERGE_MAX_DIMS
    ctypedef struct merge_shape:
        int ndim
        int64_t n[8]
        int64_t sa[8]
        int64_t sb[8]
    void add_broadcast(float *y, const float *a, const float *b, const merge_shape *s,
                       int nthreads)
    void mul_broadcast(float *y, const float *a, const float *b, const merge_shape *s,
                       int nthreads)
    void add_broadcast_ref(float *y, const float *a, const float *b, const merge_shape *s)
    void mul_broadcast_ref(float *y, const float *a, const float *b, const merge_shape *s)
    void merge_reduce(float *dx, const float *dy, const float *other, const merge_shape *s,
                      const int64_t *sx, const int64_t *so, int nthreads)
    void merge_reduce_ref(float *dx, const float *dy, const float *other, const merge_shape *s,
                          const int64_t *sx, const int64_t *so)
    void cat_forward(float *y, const float *const *xs, const int64_t *width, int k,
                     int64_t outer, int nthreads)
    void cat_backward(float *const *dxs, const float *dy, const int64_t *width, int k,
                      int64_t outer, int nthreads)

    void relu_forward(float *y, const float *x, int64_t n, int nthreads)
    void relu_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
    void sigmoid_forward(float *y, const float *x, int64_t n, int nthreads)
    void sigmoid_backward(float *dx, const float *dy, const float *y, int64_t n, int nthreads)
    void relu_forward_ref(float *y, const float *x, int64_t n)
    void relu_backward_ref(float *dx, const float *dy, const float *y, int64_t n)
    void sigmoid_forward_ref(float *y, const float *x, int64_t n)
    void sigmoid_backward_ref(float *dx, const float *dy, const float *y, int64_t n)

    ctypedef struct conv2d_shape:
        int64_t N, C, H, W, K, R, S, sh, sw, ph, pw, P, Q
        int64_t dh, dw, G
        int64_t clamp
        float lo, hi
    int conv2d_forward(float *y, const float *x, const float *w, const float *b,
                       const conv2d_shape *s, int nthreads)
    ctypedef struct conv2d_prepared:
        pass
    conv2d_prepared *conv2d_prepared_new()
    void conv2d_prepared_free(conv2d_prepared *p)
    int conv2d_forward_prepared(float *y, const float *x, const float *w, const float *b,
                                const conv2d_shape *s, conv2d_prepared *prep, int nthreads)
    ctypedef struct conv2d_link:
        const float *w
        const float *b
        conv2d_shape s
        conv2d_prepared *prep
    ctypedef struct conv2d_chain:
        conv2d_link expand, dw, project
        int has_project
    int conv2d_chain_forward(float *y, const float *x, const conv2d_chain *ch, int nthreads)
    int64_t conv2d_set_chain_strip_floats(int64_t floats)
    int conv2d_backward_data(float *dx, const float *dy, const float *w,
                             const conv2d_shape *s, int nthreads)
    int conv2d_backward_weight(float *dw, float *db, const float *dy, const float *x,
                               const conv2d_shape *s, int nthreads)
    int64_t conv2d_set_group_columns(int64_t columns)
    int conv2d_set_col2im_taps(int on)
    int conv2d_set_direct(int mode)
    int conv2d_set_kvec(int mode)
    int conv2d_set_depthwise_vectors(int mode)
    int conv2d_set_winograd(int mode)
    int conv2d_set_dense(int mode)
    int conv2d_set_grouped_wgrad(int mode)
    int conv2d_set_tune(int mode)
    int conv2d_set_tune_threads(int n)
    int conv2d_tune_threads_chosen()
    void conv2d_tune_set_best(double seconds)
    void conv2d_tune_probe_all(int on) nogil
    void conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                            const conv2d_shape *s)
    void conv2d_backward_data_ref(float *dx, const float *dy, const float *w,
                                  const conv2d_shape *s)
    void conv2d_backward_weight_ref(float *dw, float *db, const float *dy, const float *x,
                                    const conv2d_shape *s)

    ctypedef struct pool2d_shape:
        int64_t N, C, H, W, R, S, sh, sw, ph, pw, dh, dw, P, Q
    void maxpool2d_forward(float *y, int32_t *argmax, const float *x,
                           const pool2d_shape *s, int nthreads)
    void maxpool2d_forward_inference(float *y, const float *x, const pool2d_shape *s, int nthreads)
    int64_t maxpool2d_backward(float *dx, const float *dy, const int32_t *argmax,
                               const pool2d_shape *s, int nthreads)
    int64_t maxpool2d_relu_backward(float *dx, const float *dy, const int32_t *argmax,
                                    const float *y, const pool2d_shape *s, int nthreads)
    int64_t maxpool2d_relu_backward_ref(float *dx, const float *dy, const int32_t *argmax,
                                        const float *y, const pool2d_shape *s)
    void avgpool2d_forward(float *y, const float *x, const pool2d_shape *s,
                           int count_include_pad, int nthreads)
    int avgpool2d_backward(float *dx, const float *dy, const pool2d_shape *s,
                           int count_include_pad, int nthreads)
    void maxpool2d_forward_ref(float *y, int32_t *argmax, const float *x, const pool2d_shape *s)
    int64_t maxpool2d_backward_ref(float *dx, const float *dy, const int32_t *argmax,
                                   const pool2d_shape *s)
    void avgpool2d_forward_ref(float *y, const float *x, const pool2d_shape *s,
                               int count_include_pad)
    void avgpool2d_backward_ref(float *dx, const float *dy, const pool2d_shape *s,
                                int count_include_pad)
    void adaptive_maxpool2d_forward(float *y, int32_t *argmax, const float *x,
                                    const pool2d_shape *s, int nthreads)
    void adaptive_avgpool2d_forward(float *y, const float *x, const pool2d_shape *s,
                                    int nthreads)
    void adaptive_avgpool2d_backward(float *dx, const float *dy, const pool2d_shape *s,
                                     int nthreads)
    void adaptive_maxpool2d_forward_ref(float *y, int32_t *argmax, const float *x,
                                        const pool2d_shape *s)
    void adaptive_avgpool2d_forward_ref(float *y, const float *x, const pool2d_shape *s)
    void adaptive_avgpool2d_backward_ref(float *dx, const float *dy, const pool2d_shape *s)

    int linear_forward(float *y, const float *x, const float *w, const float *b,
                       int64_t N, int64_t F, int64_t O, int nthreads)
    int linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                        const float *w, int64_t N, int64_t F, int64_t O, int nthreads)
    void linear_forward_ref(float *y, const float *x, const float *w, const float *b,
                            int64_t N, int64_t F, int64_t O)
    void linear_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                             const float *w, int64_t N, int64_t F, int64_t O)

    double cross_entropy_forward(float *probs, const float *logits, const int64_t *labels,
                                 int64_t N, int64_t L, int nthreads)
    void cross_entropy_backward(float *dlogits, const float *probs, const int64_t *labels,
                                int64_t N, int64_t L, float grad_loss, int nthreads)
    double cross_entropy_forward_ref(float *probs, const float *logits, const int64_t *labels,
                                     int64_t N, int64_t L)
    void cross_entropy_backward_ref(float *dlogits, const float *probs, const int64_t *labels,
                                    int64_t N, int64_t L, float grad_loss)

    void softmax_forward(float *y, const float *x, int64_t outer, int64_t D, int64_t inner,
                         int is_log, int nthreads)
    void softmax_backward(float *dx, const float *dy, const float *y, int64_t outer, int64_t D,
                          int64_t inner, int is_log, int nthreads)
    void softmax_forward_ref(float *y, const float *x, int64_t outer, int64_t D, int64_t inner,
                             int is_log)
    void softmax_backward_ref(float *dx, const float *dy, const float *y, int64_t outer,
                              int64_t D, int64_t inner, int is_log)

    void zero_grad(float *grad, int64_t n, int nthreads)
    void sgd_step(float *param, float *buf, const float *grad, int64_t n, double lr,
                  double momentum, double dampening, double weight_decay, int nesterov,
                  int maximize, int first_step, int nthreads)
    void adam_step(float *param, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
                   const float *grad, int64_t n, double lr, double beta1, double beta2,
                   double eps, double weight_decay, int decoupled, int maximize, int64_t step,
                   int nthreads)
    void sgd_step_ref(float *param, float *buf, const float *grad, int64_t n, double lr,
                      double momentum, double dampening, double weight_decay, int nesterov,
                      int maximize, int first_step)
    void adam_step_ref(float *param, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
                       const float *grad, int64_t n, double lr, double beta1, double beta2,
                       double eps, double weight_decay, int decoupled, int maximize,
                       int64_t step)

    # peak.c (the benchmarks' peak probe)
    double fastcnn_fma_peak_gflops(int nthreads, int *threads_run)

cdef extern from "gemm.h" nogil:
    int sgemm(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
              const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
              float *C, int64_t ldc, int nthreads)
    int sgemm_packed_a_kernel(int64_t M, int64_t N)
    int64_t sgemm_packed_a_floats(int kernel, int64_t M, int64_t K)
    void sgemm_pack_a(float *packed, int kernel, int transa, int64_t M, int64_t K,
                      const float *A, int64_t lda, int nthreads)
    int sgemm_packed_bias_clamp(const float *packed, int kernel, int64_t M, int64_t N,
                                int64_t K, const float *B, int64_t ldb, float *C, int64_t ldc,
                                const float *bias, const float *clamp, int nthreads)
    int64_t sgemm_packed_b_floats(int kernel, int64_t K, int64_t N)
    void sgemm_pack_b(float *packed, int kernel, int transb, int64_t K, int64_t N,
                      const float *B, int64_t ldb, int nthreads)
    int sgemm_packed_b_bias_clamp(const float *packed, int kernel, int transa, int64_t M,
                                  int64_t N, int64_t K, const float *A, int64_t lda, float *C,
                                  int64_t ldc, const float *bias, const float *clamp,
                                  int nthreads)
    int sgemm_set_split(int mode)
    void sgemm_ref(int transa, int transb, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                   float *C, int64_t ldc)


# Data pointers of numpy arrays the binding has already validated (dtype,
# contiguity); take them with the GIL held, before `with nogil`.
cdef inline float *fptr(object a):
    return <float *> cnp.PyArray_DATA(<cnp.ndarray> a)

cdef inline int32_t *iptr(object a):
    return <int32_t *> cnp.PyArray_DATA(<cnp.ndarray> a)

cdef inline int64_t *lptr(object a):
    return <int64_t *> cnp.PyArray_DATA(<cnp.ndarray> a)
