# fastcnn._native: the one extension module. Every C kernel (csrc/) is linked
# into it once, so each C static (conv2d's scratch cache, the test hooks such
# as conv2d_set_direct) exists once per process.
#
# It holds one binding file per op family, included here (fastcnn/_<family>.pxi):
#   _cpu.pxi         isa, cpu_isa, openmp_enabled (csrc/cpu.c, threads.c, pool.c)
#   _peak.pxi        fma_peak_gflops (csrc/peak.c; for the benchmarks)
#   _blocks.pxi      _empty (the large arrays the bindings return, from csrc/blocks.c's
#                    cache), empty_cache
#   _gemm.pxi        sgemm; test hooks _set_gemm_split, _sgemm_packed, _sgemm_packed_b (csrc/gemm/)
#   _executor.pxi    Program, Frame, Step: the executor of compiled graphs
#                    (fastcnn.compiler builds Programs); _set_profiler (fastcnn.profile
#                    times each step through it); each family's file below
#                    ends with its op's Step (ConvStep, PoolStep, ...)
#   _merge.pxi       add, mul, cat and their backward: merges of branches with
#                    broadcasting, concatenation (csrc/merge.c)
#   _batchnorm2d.pxi batch_norm2d, batch_norm2d_backward, batch_norm2d_fold
#                    (csrc/batchnorm2d.c)
#   _activation.pxi  relu, sigmoid and their backward (csrc/activation.c)
#   _pointwise.pxi   tanh, leaky_relu, hardtanh, relu6, hardsigmoid, hardswish, silu,
#                    gelu and their backward (csrc/pointwise.c)
#   _conv2d.pxi      conv2d, conv2d_backward; _geometry; test hooks _set_direct,
#                    _set_group_columns, _set_kvec, _set_winograd, _set_tune,
#                    _set_tune_threads, _tune_threads_chosen, _set_tune_best
#                    (csrc/conv2d*.c)
#   _pool2d.pxi      max_pool2d, avg_pool2d, adaptive_max_pool2d, adaptive_avg_pool2d
#                    and their backward; _pool2d_shape;
#                    test hook _max_pool2d_relu_backward (csrc/pool2d.c)
#   _linear.pxi      linear, linear_backward (csrc/linear.c)
#   _loss.pxi        cross_entropy, cross_entropy_backward, cross_entropy_with_grad
#                    (csrc/loss.c)
#   _optim.pxi       sgd_update, adam_update, zero_grad_ (csrc/optim.c)
#   _softmax.pxi     softmax, log_softmax and their backward (csrc/softmax.c)
#
# All files share one module namespace: private helpers carry their family's
# prefix (_conv2d_shape, _pool2d_shape, _loss_forward, ...). The C API is
# declared in _fastcnn.pxd; compiler directives are set in setup.py.
"""fastcnn's native kernels and their bindings, in one extension module (internal:
users call fastcnn.functional, the layers, losses and optimizers)."""
cimport numpy as cnp

cnp.import_array()

include "_cpu.pxi"
include "_peak.pxi"
include "_blocks.pxi"
include "_gemm.pxi"
include "_executor.pxi"
include "_merge.pxi"
include "_batchnorm2d.pxi"
include "_activation.pxi"
include "_pointwise.pxi"
include "_conv2d.pxi"
include "_pool2d.pxi"
include "_linear.pxi"
include "_loss.pxi"
include "_optim.pxi"
include "_softmax.pxi"
