/* ringattn C API, for FFI (Python ctypes, Rust, Julia...). Every function
 * returns RINGATTN_STATUS_OK (0) on success or one of the ringattn_status
 * codes below; ringattn_last_error() gives the message of the last failure on
 * the calling thread. The stream, where there is one, is the last argument
 * (TransformerEngine habit). What is computed: docs/SPEC.md.
 * Link: libringattn.so (pkg-config ringattn, or CMake ringattn::ringattn). */
#ifndef RINGATTN_RINGATTN_H_
#define RINGATTN_RINGATTN_H_
#include <mpi.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ringattn_context* ringattn_context_t;

/* Return codes: the values of ringattn::StatusCode (ringattn/status.hpp). */
typedef enum ringattn_status {
  RINGATTN_STATUS_OK = 0,
  RINGATTN_STATUS_INVALID_ARGUMENT = 1, /* a value outside its allowed range */
  RINGATTN_STATUS_MISMATCH = 2,         /* ranks disagree on config or shape */
  RINGATTN_STATUS_UNSUPPORTED = 3,      /* valid request this build/backend cannot serve */
  RINGATTN_STATUS_COMM_ERROR = 4,       /* MPI / NCCL failure */
  RINGATTN_STATUS_DEVICE_ERROR = 5,     /* CUDA failure */
  RINGATTN_STATUS_TIMEOUT = 6,          /* a peer did not answer in time */
  RINGATTN_STATUS_IO_ERROR = 7,         /* file could not be read or written */
  RINGATTN_STATUS_INTERNAL = 8,
  RINGATTN_STATUS_PEER_ERROR = 9        /* another rank reported an error */
} ringattn_status_t;

typedef struct {
  uint32_t struct_size;   /* sizeof(ringattn_config_t) */
  int32_t num_branches;   /* entries in w and r */
  const int64_t* w;       /* segment lengths, >= 1 */
  const int64_t* r;       /* dilation rates, 1 <= r <= w */
  int32_t causal;         /* 0 or 1 */
  double scale;           /* 0: 1/sqrt(head_dim) */
  int32_t head_offsets;   /* 0 interleaved, 1 blocked */
  int32_t dtype;          /* 0 f32, 1 f16, 2 bf16 */
  int32_t backend;        /* 0 cpu, 1 cuda */
  int32_t transport;      /* 0 mpi, 1 nccl */
  int64_t heads;          /* H */
  int64_t head_dim;       /* D */
  double timeout_seconds; /* <= 0: 60 s */
  /* Added after the first release: a struct_size that ends before it (an older caller's
     sizeof) reads as 0. */
  int32_t nondeterministic; /* 0: the backward's reruns give the same bits (cuda: dQ from its
                               own pass); 1: dQ by float32 atomics on cuda (about 1.1x faster,
                               not bit-identical, the same memory); the cpu backend
                               is always deterministic */
} ringattn_config_t;

/* Collective over comm. */
int ringattn_create(const ringattn_config_t* config, MPI_Comm comm, ringattn_context_t* out);
/* Collective. q, k, v, o: batch x seq/P x heads x head_dim; lse: batch x seq/P x heads (float).
 * Stream-ordered on the cuda backend: with NCCL (or one rank) it may return with its work in
 * flight; the next forward, ringattn_synchronize and ringattn_destroy wait for it under the
 * timeout (see Context::forward in ringattn.hpp). Collective argument errors fail every rank.
 * Buffers: 16-byte aligned on the cuda backend, element-aligned on cpu; lse 4-byte aligned. */
int ringattn_forward(ringattn_context_t ctx, int64_t batch, int64_t seq, const void* q, const void* k,
                     const void* v, void* o, float* lse, void* stream);
/* Collective: the exact gradient of a forward on the same shapes (see Context::backward in
 * ringattn.hpp). q, k, v, o, dout, dq, dk, dv: batch x seq/P x heads x head_dim; lse: the
 * forward's LSE (float). dq, dk, dv are overwritten. Both backends (cuda: stream-ordered). */
int ringattn_backward(ringattn_context_t ctx, int64_t batch, int64_t seq, const void* q, const void* k,
                      const void* v, const void* o, const float* lse, const void* dout, void* dq, void* dk,
                      void* dv, void* stream);
/* Waits for the forward in flight (cuda backend; see Context::synchronize). */
int ringattn_synchronize(ringattn_context_t ctx);
void ringattn_destroy(ringattn_context_t ctx);
const char* ringattn_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* RINGATTN_RINGATTN_H_ */
