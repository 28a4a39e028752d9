/* The C API (runtime/include/ringattn/ringattn.h), compiled as C, on the cpu
 * backend under mpirun. Checks:
 *   1. a distributed forward through the C API against the same forward by a
 *      one-rank context (MPI_COMM_SELF) over the whole sequence: this rank's
 *      rows agree within the f32 tolerance (SPEC: relative L2 1e-5), no NaN;
 *   2. ringattn_synchronize succeeds; null handles give an error and a message;
 *   3. a bad argument on one rank only (struct_size, then an invalid dtype)
 *      fails on every rank with a message naming the value (no hang: CTest's
 *      timeout fails the test otherwise);
 *   4. a sequence length not divisible by the ranks fails on every rank.
 * Inputs are a pure function of (seed, tensor, global index), the seed fresh
 * per run (rank 0's clock, broadcast) and printed on failure. */
#include <math.h>
#include <stddef.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringattn/ringattn.h"

static int g_rank = 0, g_world = 1, g_failures = 0;
static unsigned long long g_seed = 0;

#define CHECK(cond, ...)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      fprintf(stderr, "rank %d: FAILED %s:%d (seed %llu): ", g_rank, __FILE__, __LINE__, g_seed); \
      fprintf(stderr, __VA_ARGS__);                                                       \
      fprintf(stderr, "\n");                                                              \
      g_failures++;                                                                       \
    }                                                                                     \
  } while (0)

static float synth(unsigned long long seed, int tensor, unsigned long long i) {
  unsigned long long x = seed * 0x9E3779B97F4A7C15ull + (unsigned long long)tensor * 0xBF58476D1CE4E5B9ull + i;
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static const int64_t kW[] = {256, 512, 1024};
static const int64_t kR[] = {1, 2, 4};

static ringattn_config_t make_config(void) {
  ringattn_config_t c;
  memset(&c, 0, sizeof(c));
  c.struct_size = (uint32_t)sizeof(c);
  c.num_branches = 3;
  c.w = kW;
  c.r = kR;
  c.causal = 1;
  c.head_offsets = 0;
  c.dtype = 0; /* f32 */
  c.backend = 0; /* cpu */
  c.transport = 0; /* mpi */
  c.heads = 3;
  c.head_dim = 16;
  c.timeout_seconds = 30;
  return c;
}

/* Every rank must see the same failure, and the message must name the value. */
static void expect_all_fail(int rc, const char* needle, const char* what) {
  const char* msg = ringattn_last_error();
  CHECK(rc != 0, "%s: expected an error, got success", what);
  CHECK(msg != NULL && strstr(msg, needle) != NULL, "%s: message '%s' does not contain '%s'", what,
        msg ? msg : "(null)", needle);
  int failed = rc != 0, all = 0;
  MPI_Allreduce(&failed, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  CHECK(all == 1, "%s: not every rank failed", what);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world);
  if (g_rank == 0) g_seed = (unsigned long long)time(NULL) ^ ((unsigned long long)clock() << 20);
  MPI_Bcast(&g_seed, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);

  const int64_t H = 3, D = 16, N = 2304; /* 2304 = 12 * 192: np 1..4 divide it; no multiple of 1024 */
  const int64_t L = N / g_world, row = H * D;
  float *q = malloc(sizeof(float) * (size_t)(N * row)), *k = malloc(sizeof(float) * (size_t)(N * row)),
        *v = malloc(sizeof(float) * (size_t)(N * row));
  float *o = malloc(sizeof(float) * (size_t)(L * row)), *lse = malloc(sizeof(float) * (size_t)(L * H));
  float *o1 = malloc(sizeof(float) * (size_t)(N * row)), *lse1 = malloc(sizeof(float) * (size_t)(N * H));
  for (int64_t i = 0; i < N * row; ++i) {
    q[i] = synth(g_seed, 0, (unsigned long long)i);
    k[i] = synth(g_seed, 1, (unsigned long long)i);
    v[i] = synth(g_seed, 2, (unsigned long long)i);
  }
  memset(o, 0xff, sizeof(float) * (size_t)(L * row)); /* NaN: every output must be written */
  memset(lse, 0xff, sizeof(float) * (size_t)(L * H));
  memset(o1, 0xff, sizeof(float) * (size_t)(N * row));
  memset(lse1, 0xff, sizeof(float) * (size_t)(N * H));

  /* 1. Distributed through the C API against one rank over the whole sequence. The
     distributed context asks for the nondeterministic backward (the cpu backend is always
     deterministic: same results); the one-rank context is made from a caller's struct of
     the size before `nondeterministic` existed (the field past it is never read). */
  ringattn_config_t cfg = make_config();
  cfg.nondeterministic = 1;
  ringattn_config_t old = make_config();
  old.struct_size = (uint32_t)offsetof(ringattn_config_t, nondeterministic);
  old.nondeterministic = 7;
  ringattn_context_t ctx = NULL, solo = NULL;
  int rc = ringattn_create(&cfg, MPI_COMM_WORLD, &ctx);
  CHECK(rc == 0, "ringattn_create: %d %s", rc, ringattn_last_error());
  if (rc == 0) {
    const int64_t off = (int64_t)g_rank * L * row;
    rc = ringattn_forward(ctx, 1, N, q + off, k + off, v + off, o, lse, NULL);
    CHECK(rc == 0, "ringattn_forward: %d %s", rc, ringattn_last_error());
    rc = ringattn_synchronize(ctx);
    CHECK(rc == 0, "ringattn_synchronize: %d %s", rc, ringattn_last_error());
  }
  rc = ringattn_create(&old, MPI_COMM_SELF, &solo);
  CHECK(rc == 0, "ringattn_create (self, the struct without nondeterministic): %d %s", rc, ringattn_last_error());
  if (rc == 0) {
    rc = ringattn_forward(solo, 1, N, q, k, v, o1, lse1, NULL);
    CHECK(rc == 0, "ringattn_forward (self): %d %s", rc, ringattn_last_error());
  }
  double num = 0, den = 0, lse_err = 0;
  int64_t nan = 0;
  for (int64_t i = 0; i < L * row; ++i) {
    const double a = o[i], b = o1[g_rank * L * row + i];
    if (isnan(a) || isnan(b)) nan++;
    num += (a - b) * (a - b);
    den += b * b;
  }
  for (int64_t i = 0; i < L * H; ++i) {
    const double a = lse[i], b = lse1[g_rank * L * H + i];
    if (isnan(a) || isnan(b)) nan++;
    if (fabs(a - b) > lse_err) lse_err = fabs(a - b);
  }
  const double rel = den > 0 ? sqrt(num / den) : 1.0;
  CHECK(nan == 0, "%lld NaN outputs", (long long)nan);
  CHECK(rel <= 1e-5, "O relative L2 %.3e > 1e-5 against the one-rank context", rel);
  CHECK(lse_err <= 1e-4, "LSE max error %.3e > 1e-4 against the one-rank context", lse_err);

  /* 1b. The backward through the C API (dO = V), distributed against one rank. */
  if (ctx != NULL && solo != NULL) {
    const int64_t off = (int64_t)g_rank * L * row;
    float* g = (float*)calloc((size_t)(3 * L * row), sizeof(float));
    float* g1 = (float*)calloc((size_t)(3 * N * row), sizeof(float));
    rc = ringattn_backward(ctx, 1, N, q + off, k + off, v + off, o, lse, v + off, g, g + L * row, g + 2 * L * row, NULL);
    CHECK(rc == 0, "ringattn_backward: %d %s", rc, ringattn_last_error());
    rc = ringattn_backward(solo, 1, N, q, k, v, o1, lse1, v, g1, g1 + N * row, g1 + 2 * N * row, NULL);
    CHECK(rc == 0, "ringattn_backward (self): %d %s", rc, ringattn_last_error());
    for (int t = 0; t < 3; ++t) {
      double gn = 0, gd = 0;
      for (int64_t i = 0; i < L * row; ++i) {
        const double a = g[t * L * row + i], b = g1[t * N * row + off + i];
        gn += isnan(a) ? 1e30 : (a - b) * (a - b);
        gd += b * b;
      }
      const double grel = gd > 0 ? sqrt(gn / gd) : 1.0;
      CHECK(grel <= 2e-5, "gradient %d relative L2 %.3e > 2e-5 against the one-rank context", t, grel);
    }
    free(g);
    free(g1);
  }
  rc = ringattn_backward(NULL, 1, N, q, k, v, o, lse, v, o, o, o, NULL);
  CHECK(rc != 0 && strstr(ringattn_last_error(), "context is null"), "backward(NULL): %d %s", rc, ringattn_last_error());

  /* 2. Null handles. */
  rc = ringattn_forward(NULL, 1, N, q, k, v, o, lse, NULL);
  CHECK(rc != 0 && strstr(ringattn_last_error(), "context is null"), "forward(NULL): %d %s", rc, ringattn_last_error());
  rc = ringattn_synchronize(NULL);
  CHECK(rc != 0 && strstr(ringattn_last_error(), "context is null"), "synchronize(NULL): %d %s", rc,
        ringattn_last_error());

  /* 3. A bad argument on the last rank only fails every rank. */
  ringattn_config_t bad = make_config();
  ringattn_context_t none = NULL;
  if (g_rank == g_world - 1) bad.struct_size = 8;
  rc = ringattn_create(&bad, MPI_COMM_WORLD, &none);
  expect_all_fail(rc, "struct_size is 8", "struct_size on one rank");
  bad = make_config();
  if (g_rank == g_world - 1) bad.nondeterministic = 2;
  rc = ringattn_create(&bad, MPI_COMM_WORLD, &none);
  expect_all_fail(rc, "nondeterministic is 2", "nondeterministic on one rank");
  bad = make_config();
  if (g_rank == g_world - 1) bad.dtype = 7;
  rc = ringattn_create(&bad, MPI_COMM_WORLD, &none);
  expect_all_fail(rc, "dtype is 7", "dtype on one rank");
  CHECK(none == NULL, "a failed create returned a context");

  /* 4. A length the ranks do not divide (only with several ranks). */
  if (ctx != NULL && g_world > 1) {
    rc = ringattn_forward(ctx, 1, N + 1, q, k, v, o, lse, NULL);
    expect_all_fail(rc, "2305", "seq not divisible");
  }

  ringattn_destroy(ctx);
  ringattn_destroy(solo);
  free(q);
  free(k);
  free(v);
  free(o);
  free(lse);
  free(o1);
  free(lse1);
  int total = 0;
  MPI_Allreduce(&g_failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (g_rank == 0) printf("c_api_test: %d ranks, %s (%d failed checks)\n", g_world, total ? "FAILED" : "OK", total);
  MPI_Finalize();
  return total ? 1 : 0;
}
